"""Benchmark: the native feature operators (vm.ml.ops) against their best numpy equivalents.

Each op runs at 10k and 1M elements. The numpy side is vectorised numpy written for speed (in-place
where it helps) and does the same input checks the op's contract requires (sortedness, offsets,
boundaries); where no vectorised numpy equivalent exists (string hashing, vocabulary lookup,
tokenising) the baseline is the fastest plain-Python form (mmh3 per string, a dict, re + mmh3) and
the table says so. Every pair is checked to give the same answer before it is timed. Times are
medians over interleaved repeats; ratio = numpy time / native time (> 1: native is faster).

The last line printed is one JSON object: min_op_ratio, fused_ratio, ratios per op and size, and
the medians in microseconds. Run: .venv/bin/python bench/native_ops.py [--quick]
"""

from __future__ import annotations

import gc
import json
import re
import sys
import time
from itertools import repeat
from pathlib import Path

import mmh3
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vm.ml import ops  # noqa: E402

RNG = np.random.default_rng(7)
SIZES = {"10k": 10_000, "1M": 1_000_000}
BUDGET_S = 0.7  # per op and size, both sides together


def timeit_pair(f_np, f_nat, budget=BUDGET_S):
    """Median seconds per call of each, sampled alternately."""
    for f in (f_np, f_nat, f_np, f_nat):  # warm up (page faults, caches, lazy imports)
        f()
    t0 = time.perf_counter()
    f_np()
    f_nat()
    one = time.perf_counter() - t0
    number = max(1, int(0.002 / max(one / 2, 1e-9)))
    repeats = int(min(25, max(3, budget / max(one * number, 1e-9))))
    s_np, s_nat = [], []
    gc.disable()
    try:
        for r in range(repeats):
            order = ((f_np, s_np), (f_nat, s_nat)) if r % 2 == 0 else ((f_nat, s_nat), (f_np, s_np))
            for f, sink in order:
                t = time.perf_counter()
                for _ in range(number):
                    f()
                sink.append((time.perf_counter() - t) / number)
    finally:
        gc.enable()
    return float(np.median(s_np)), float(np.median(s_nat))


def same(a, b):
    if isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            same(x, y)
        return
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# numpy equivalents


def np_murmur3_ids(ids: np.ndarray, num_buckets: int, seed: int = 0) -> np.ndarray:
    """MurmurHash3 x86_32 of the 8 little-endian bytes of each id, vectorised in uint32."""
    u = ids.view(np.uint64)
    h = np.full(ids.shape, seed, np.uint32)
    for k in ((u & np.uint64(0xFFFFFFFF)).astype(np.uint32), (u >> np.uint64(32)).astype(np.uint32)):
        k *= np.uint32(0xCC9E2D51)
        k = (k << np.uint32(15)) | (k >> np.uint32(17))
        k *= np.uint32(0x1B873593)
        h ^= k
        h = (h << np.uint32(13)) | (h >> np.uint32(19))
        h = h * np.uint32(5) + np.uint32(0xE6546B64)
    h ^= np.uint32(8)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h.astype(np.int64) % num_buckets


def np_affine(x, p, q, minmax):
    den = q - p if minmax else q
    zero = den == 0
    out = np.subtract(x, p)
    out /= np.where(zero, 1.0, den)
    if np.any(zero):  # hi == lo / std == 0 -> 0, NaN stays NaN
        out[..., zero] = np.where(np.isnan(x[..., zero]), np.nan, 0.0)
    return out


def np_one_hot(ids, depth):
    out = np.zeros((ids.shape[0], depth), np.float32)
    ok = (ids >= 0) & (ids < depth)
    out[np.flatnonzero(ok), ids[ok]] = 1.0
    return out


def np_multi_hot(offsets, ids, depth):
    d = np.diff(offsets)
    if offsets[0] < 0 or offsets[-1] > ids.shape[0] or np.any(d < 0):
        raise ValueError("offsets")
    rows = np.repeat(np.arange(offsets.shape[0] - 1), d)
    sub = ids[offsets[0] : offsets[-1]]
    ok = (sub >= 0) & (sub < depth)
    out = np.zeros((offsets.shape[0] - 1, depth), np.float32)
    out[rows[ok], sub[ok]] = 1.0
    return out


def np_check_sorted(ts):
    if ts.shape[0] > 1 and not np.all(ts[1:] >= ts[:-1]):
        raise ValueError("unsorted")


def np_window_agg(ts, vals, now, windows):
    np_check_sorted(ts)
    end = np.searchsorted(ts, now, side="right")
    out = np.empty((len(windows), 6))
    for j, w in enumerate(windows):
        v = vals[np.searchsorted(ts, now - w, side="right") : end]
        if v.shape[0] == 0:
            out[j] = (0, 0, np.nan, np.nan, np.nan, np.nan)
        else:
            s = v.sum()
            out[j] = (v.shape[0], s, s / v.shape[0], v.min(), v.max(), v[-1])
    return out


def np_window_agg_grouped(keys, ts, vals, now, windows, g):
    np_check_sorted(ts)
    if keys.shape[0] and (keys.min() < 0 or keys.max() >= g):
        raise ValueError("keys")
    end = np.searchsorted(ts, now, side="right")
    out = np.empty((g, len(windows), 6))
    for j, w in enumerate(windows):
        sl = slice(np.searchsorted(ts, now - w, side="right"), end)
        k, v = keys[sl], vals[sl]
        cnt = np.bincount(k, minlength=g).astype(np.float64)
        s = np.bincount(k, weights=v, minlength=g)
        mn = np.full(g, np.inf)
        mx = np.full(g, -np.inf)
        np.minimum.at(mn, k, v)
        np.maximum.at(mx, k, v)
        last = np.full(g, np.nan)
        last[k] = v  # the last write wins: the newest event per key
        empty = cnt == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j, 2] = s / cnt
        out[:, j, 0], out[:, j, 1], out[:, j, 3], out[:, j, 4], out[:, j, 5] = cnt, s, mn, mx, last
        out[empty, j, 2:] = np.nan
    return out


def np_decayed(ts, now, hl, weights=None, keys=None, g=None):
    e = np.exp2((ts - now) / hl)
    if weights is not None:
        e *= weights
    e[ts > now] = 0.0
    return e.sum() if keys is None else np.bincount(keys, weights=e, minlength=g)


def np_top_k(x, k):
    idx = np.argpartition(-x, k - 1)[:k]
    return idx[np.argsort(-x[idx], kind="stable")]


def np_image(img, oh, ow, mean, std):
    h, w, c = img.shape

    def taps(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = src.astype(np.int64)
        return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)

    y0, y1, wy = taps(h, oh)
    x0, x1, wx = taps(w, ow)
    f = img.astype(np.float32)
    rows0, rows1 = f[y0], f[y1]
    wx = wx[None, :, None]
    top = rows0[:, x0] + (rows0[:, x1] - rows0[:, x0]) * wx
    bot = rows1[:, x0] + (rows1[:, x1] - rows1[:, x0]) * wx
    res = top + (bot - top) * wy[:, None, None]
    scale = (1.0 / (255.0 * np.asarray(std))).astype(np.float32)
    bias = (-np.asarray(mean) / np.asarray(std)).astype(np.float32)
    res = res * scale + bias
    return np.ascontiguousarray(res.transpose(2, 0, 1))


SEP = re.compile(
    "[\x00-/:-@\\[-`{-\x7f\x80-\xbf\xd7\xf7\u2000-\u206f\u3000-\u303f\ufeff"
    "\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]+"
)


def py_tokenize(texts, nb, ngrams=(1, 2), max_tokens=32):
    ids = np.full((len(texts), max_tokens), -1, np.int64)
    lengths = np.zeros(len(texts), np.int64)
    h = mmh3.hash
    for r, text in enumerate(texts):
        words = [w for w in SEP.split(text.lower()) if w]
        toks = []
        for i in range(len(words)):
            for n in ngrams:
                if i + n <= len(words):
                    toks.append(h(" ".join(words[i : i + n]), 0, False) % nb)
            if len(toks) >= max_tokens:
                break
        toks = toks[:max_tokens]
        ids[r, : len(toks)] = toks
        lengths[r] = len(toks)
    return ids, lengths


# ---------------------------------------------------------------------------------------------
# cases: name -> (note, builder(n) -> (numpy_fn, native_fn))

VOCAB_TOKENS = [f"token_{i:05d}" for i in range(50_000)]
VOCAB = ops.Vocab(VOCAB_TOKENS)
VOCAB_DICT = {t: i + 1 for i, t in enumerate(VOCAB_TOKENS)}
WORDS = np.array(
    ("the quick brown fox jumps over lazy dog Search Query shoes RED size 42 cheap best new").split()
)


def case_hash_strings(n):
    strs = [f"user_{i}_item_{(i * 7919) % 100_003}" for i in range(n)]
    return (
        lambda: np.fromiter(map(mmh3.hash, strs, repeat(0), repeat(False)), np.int64, n) % 1_000_003,
        lambda: ops.hash_strings(strs, 1_000_003),
    )


def case_hash_ids(n):
    ids = RNG.integers(-(2**62), 2**62, n, dtype=np.int64)
    return lambda: np_murmur3_ids(ids, 1_000_003), lambda: ops.hash_ids(ids, 1_000_003)


def case_bucketize(n):
    x = RNG.normal(size=n)
    b = np.quantile(x, np.linspace(0.01, 0.99, 100))

    def np_fn():
        if not np.all(b[1:] > b[:-1]):
            raise ValueError("boundaries")
        return np.searchsorted(b, x, side="right")

    return np_fn, lambda: ops.bucketize(x, b)


def _matrix(n):
    x = RNG.normal(size=(n // 16, 16)) * 3
    lo = x.min(axis=0)
    hi = x.max(axis=0)
    return x, lo, hi


def case_minmax_cols(n):
    x, lo, hi = _matrix(n)
    return lambda: np_affine(x, lo, hi, True), lambda: ops.minmax_scale(x, lo, hi)


def case_minmax_1d(n):
    x = RNG.normal(size=n)
    return lambda: np_affine(x, np.float64(-4.0), np.float64(4.0), True), lambda: ops.minmax_scale(
        x, -4.0, 4.0
    )


def case_zscore_cols(n):
    x, lo, hi = _matrix(n)
    mean, std = x.mean(axis=0), x.std(axis=0)
    return lambda: np_affine(x, mean, std, False), lambda: ops.zscore(x, mean, std)


def case_zscore_1d(n):
    x = RNG.normal(size=n)
    return lambda: np_affine(x, np.float64(0.5), np.float64(2.0), False), lambda: ops.zscore(x, 0.5, 2.0)


def case_clip_cols(n):
    x, lo, hi = _matrix(n)
    lo, hi = lo / 2, hi / 2

    def np_fn():  # the faster of np.clip and minimum(maximum()) with broadcast bounds
        out = np.maximum(x, lo)
        return np.minimum(out, hi, out=out)

    return np_fn, lambda: ops.clip(x, lo, hi)


def case_clip_1d(n):
    x = RNG.normal(size=n)
    return lambda: np.clip(x, -1.0, 1.0), lambda: ops.clip(x, -1.0, 1.0)


def case_log1p_f64(n):
    x = RNG.exponential(10.0, n)
    return lambda: np.log1p(x), lambda: ops.log1p(x)


def case_log1p_f32(n):
    x = RNG.exponential(10.0, n).astype(np.float32)
    return lambda: np.log1p(x), lambda: ops.log1p(x)


def case_one_hot(n):
    ids = RNG.integers(-1, 17, n)
    return lambda: np_one_hot(ids, 16), lambda: ops.one_hot(ids, 16)


def case_multi_hot(n):
    rows = n // 4
    offsets = np.concatenate([[0], np.cumsum(RNG.integers(0, 9, rows))]).astype(np.int64)
    ids = RNG.integers(0, 64, offsets[-1]).astype(np.int64)
    return lambda: np_multi_hot(offsets, ids, 64), lambda: ops.multi_hot(offsets, ids, 64)


def case_vocab_lookup(n):
    q = [f"token_{i:05d}" for i in RNG.integers(0, 55_000, n)]
    return lambda: np.fromiter(map(VOCAB_DICT.get, q, repeat(0)), np.int64, n), lambda: VOCAB.lookup(q)


def _events(n):
    ts = np.sort(RNG.integers(0, 7_200_000, n)).astype(np.int64)  # 2 h of ms timestamps
    vals = RNG.exponential(5.0, n)
    keys = RNG.integers(0, 64, n).astype(np.int64)
    return ts, vals, keys


WINDOWS = [60_000, 300_000, 3_600_000]


def case_window_agg(n):
    ts, vals, _ = _events(n)
    return lambda: np_window_agg(ts, vals, 7_200_000, WINDOWS), lambda: ops.window_agg(
        ts, vals, 7_200_000, WINDOWS
    )


def case_window_agg_grouped(n):
    ts, vals, keys = _events(n)
    return (
        lambda: np_window_agg_grouped(keys, ts, vals, 7_200_000, WINDOWS, 64),
        lambda: ops.window_agg_grouped(keys, ts, vals, 7_200_000, WINDOWS, 64),
    )


def case_decayed_count(n):
    ts, vals, keys = _events(n)
    now = 7_000_000
    return (
        lambda: np_decayed(ts, now, 600_000.0, vals, keys, 64),
        lambda: ops.decayed_count(ts, now, 600_000.0, keys=keys, num_groups=64, weights=vals),
    )


def case_top_k(n):
    x = RNG.normal(size=n)
    return lambda: np_top_k(x, 100), lambda: ops.top_k(x, 100)[0]


def case_image(n):
    side = int(round((n / 3) ** 0.5))
    img = RNG.integers(0, 256, (int(side * 1.3), int(side * 1.2), 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return (
        lambda: np_image(img, side, side, mean, std),
        lambda: ops.image_preprocess(img, side, side, mean=mean, std=std),
    )


def case_tokenize(n):  # n words, 12 per text
    texts = [" ".join(RNG.choice(WORDS, 12)) + "!" for _ in range(n // 12)]
    return lambda: py_tokenize(texts, 100_003), lambda: ops.tokenize(texts, 100_003)


CASES = {
    "hash_strings": ("baseline: mmh3 per string (no vectorised numpy)", case_hash_strings),
    "hash_ids": ("baseline: murmur3 vectorised in numpy uint32", case_hash_ids),
    "bucketize": ("np.searchsorted, 100 boundaries", case_bucketize),
    "minmax_scale[n,16]": ("per-column lo/hi", case_minmax_cols),
    "minmax_scale[n]": ("scalar lo/hi", case_minmax_1d),
    "zscore[n,16]": ("per-column mean/std", case_zscore_cols),
    "zscore[n]": ("scalar mean/std", case_zscore_1d),
    "clip[n,16]": ("per-column bounds", case_clip_cols),
    "clip[n]": ("np.clip, scalar bounds", case_clip_1d),
    "log1p[f64]": ("np.log1p (SIMD)", case_log1p_f64),
    "log1p[f32]": ("np.log1p (SIMD)", case_log1p_f32),
    "one_hot": ("depth 16, fancy assignment", case_one_hot),
    "multi_hot": ("n = ids, 4 per row, depth 64", case_multi_hot),
    "vocab_lookup": ("baseline: dict.get per string, 50k vocab", case_vocab_lookup),
    "window_agg": ("3 windows, searchsorted + slices", case_window_agg),
    "window_agg_grouped": ("64 groups x 3 windows, bincount/ufunc.at", case_window_agg_grouped),
    "decayed_count": ("64 groups, weights, exp2 + bincount", case_decayed_count),
    "top_k": ("k=100, argpartition + argsort", case_top_k),
    "image_preprocess": ("n = output values, float32 numpy", case_image),
    "tokenize": ("n = words; baseline: re + mmh3 (Python)", case_tokenize),
}


# ---------------------------------------------------------------------------------------------
# the ranking feature pipeline


def pipeline_inputs(n_events=10_000, n_cand=100):
    ts = np.sort(RNG.integers(0, 7_200_000, n_events)).astype(np.int64)
    cats_raw = RNG.integers(10**9, 10**9 + 200, n_events).astype(np.int64)
    items_raw = RNG.integers(0, 2**40, n_events).astype(np.int64)
    dwell = RNG.exponential(8.0, n_events)
    cand_cat = RNG.choice(cats_raw, n_cand)
    cand_brand = RNG.integers(0, 16, n_cand)
    cand_price = RNG.exponential(30.0, n_cand)
    mean = np.concatenate([np.full(18, 1.0), [0.5]])
    std = np.concatenate([np.full(18, 4.0), [1.5]])
    return dict(
        ts=ts, cats=cats_raw, items=items_raw, dwell=dwell, now=7_200_000, cand_cat=cand_cat,
        cand_brand=cand_brand, cand_price=cand_price, mean=mean, std=std,
    )  # fmt: skip


G = 64


def pipeline_native(d):
    keys = ops.hash_ids(d["cats"], G)
    ops.hash_ids(d["items"], 1 << 20)  # item buckets (an embedding lookup would use them)
    agg = ops.window_agg_grouped(keys, d["ts"], d["dwell"], d["now"], WINDOWS, G)
    dec = ops.decayed_count(d["ts"], d["now"], 600_000.0, keys=keys, num_groups=G)
    ck = ops.hash_ids(d["cand_cat"], G)
    raw = np.concatenate([agg[ck].reshape(-1, 18), dec[ck][:, None]], axis=1)
    np.nan_to_num(raw, copy=False)
    feats = ops.clip(ops.zscore(raw, d["mean"], d["std"]), -5.0, 5.0)
    price = ops.minmax_scale(ops.log1p(d["cand_price"]), 0.0, 6.0)
    brand = ops.one_hot(d["cand_brand"], 16)
    return np.concatenate([feats, price[:, None], brand], axis=1)


def pipeline_numpy(d):
    keys = np_murmur3_ids(d["cats"], G)
    np_murmur3_ids(d["items"], 1 << 20)
    agg = np_window_agg_grouped(keys, d["ts"], d["dwell"], d["now"], WINDOWS, G)
    dec = np_decayed(d["ts"], d["now"], 600_000.0, keys=keys, g=G)
    ck = np_murmur3_ids(d["cand_cat"], G)
    raw = np.concatenate([agg[ck].reshape(-1, 18), dec[ck][:, None]], axis=1)
    np.nan_to_num(raw, copy=False)
    feats = np.clip(np_affine(raw, d["mean"], d["std"], False), -5.0, 5.0)
    price = np_affine(np.log1p(d["cand_price"]), np.float64(0.0), np.float64(6.0), True)
    brand = np_one_hot(d["cand_brand"], 16)
    return np.concatenate([feats, price[:, None], brand], axis=1)


# ---------------------------------------------------------------------------------------------


def main(argv):
    quick = "--quick" in argv
    sizes = {"10k": 10_000} if quick else SIZES
    results, times = {}, {}
    print(f"{'op':22s} {'size':>5s} {'numpy us':>12s} {'native us':>12s} {'ratio':>8s}  baseline")
    for name, (note, build) in CASES.items():
        for label, n in sizes.items():
            f_np, f_nat = build(n)
            same(f_np(), f_nat())
            t_np, t_nat = timeit_pair(f_np, f_nat)
            key = f"{name}@{label}"
            results[key] = round(t_np / t_nat, 3)
            times[key] = [round(t_np * 1e6, 2), round(t_nat * 1e6, 2)]
            print(
                f"{name:22s} {label:>5s} {t_np * 1e6:12.1f} {t_nat * 1e6:12.1f} {t_np / t_nat:8.2f}  {note}"
            )
    d = pipeline_inputs()
    same(pipeline_numpy(d), pipeline_native(d))
    p_np, p_nat = timeit_pair(lambda: pipeline_numpy(d), lambda: pipeline_native(d), budget=2.0)
    fused = p_np / p_nat
    print(f"\nranking pipeline (10k events, 100 candidates, 36 features): numpy {p_np * 1e6:.1f} us, "
          f"native {p_nat * 1e6:.1f} us, ratio {fused:.2f}")  # fmt: skip
    worst = min(results, key=results.get)
    print(f"smallest op ratio: {results[worst]:.2f} ({worst})")
    summary = {
        "min_op_ratio": results[worst],
        "min_op": worst,
        "fused_ratio": round(fused, 3),
        "fused_us": [round(p_np * 1e6, 1), round(p_nat * 1e6, 1)],
        "ratios": results,
        "us_numpy_native": times,
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main(sys.argv[1:])
