"""vm.ml.ops (the native feature operators) against reference implementations written here.

Integer outputs must be equal, float outputs equal to rtol 1e-6 (NaN == NaN). Hash ops are checked
against mmh3 / xxhash, everything else against numpy code written from the formula in
docs/native-ops.md.
"""

from __future__ import annotations

import gc
import re
import sys
import threading
import time
import weakref

import mmh3
import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vm.ml._ops import ffi, lib

from vm.ml import ops

RNG = np.random.default_rng(20240611)
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(actual, expected, rtol=1e-6, atol=0.0):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def misaligned(a: np.ndarray) -> np.ndarray:
    """The same values in a buffer that starts one byte off alignment."""
    out = np.frombuffer(b"x" + np.ascontiguousarray(a).tobytes(), dtype=a.dtype, offset=1).reshape(a.shape)
    assert not out.flags.aligned or a.dtype.itemsize == 1
    return out


def strided(a: np.ndarray) -> np.ndarray:
    """The same values as a non-contiguous view (every other row of a bigger array)."""
    big = np.empty((a.shape[0] * 2,) + a.shape[1:], a.dtype)
    big[::2] = a
    big[1::2] = 0
    view = big[::2]
    assert not view.flags.c_contiguous or a.shape[0] <= 1
    return view


def huge(dtype=np.float64, n=ops.MAX_ELEMENTS + 1):
    """An array over the size cap that takes no memory (zero strides)."""
    return np.broadcast_to(np.zeros(1, dtype), (n,))


# ---------------------------------------------------------------------------------------------
# hashing

WORDS = [
    "",
    "a",
    "ab",
    "abc",
    "abcd",
    "hello world",
    "wörld",
    "日本語テキスト",
    "emoji 🎉🎉",
    "x" * 1000,
    "tab\tnl\n",
]


def ref_hash(strings, nb, seed=0):
    return np.array([mmh3.hash(s, seed, signed=False) % nb for s in strings], dtype=np.int64)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1])
@pytest.mark.parametrize("nb", [1, 7, 1000, 2**31, 2**32, 2**40, 2**63 - 1])
def test_hash_strings_matches_mmh3(seed, nb):
    out = ops.hash_strings(WORDS, nb, seed)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, ref_hash(WORDS, nb, seed))


def test_murmur3_32_raw_hashes():
    out = ops.murmur3_32(WORDS, seed=9)
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, [mmh3.hash(s, 9, signed=False) for s in WORDS])


def test_hash_strings_input_forms():
    expected = ref_hash(WORDS, 97)
    np.testing.assert_array_equal(ops.hash_strings(tuple(WORDS), 97), expected)
    np.testing.assert_array_equal(ops.hash_strings(np.array(WORDS), 97), expected)  # 'U' fixed width
    np.testing.assert_array_equal(ops.hash_strings(np.array(WORDS, dtype=object), 97), expected)
    if hasattr(np.dtypes, "StringDType"):
        np.testing.assert_array_equal(
            ops.hash_strings(np.array(WORDS, dtype=np.dtypes.StringDType()), 97), expected
        )
    u = np.repeat(np.array(WORDS), 3)[::3]  # non-contiguous "U" array
    np.testing.assert_array_equal(ops.hash_strings(u, 97), expected)


def test_hash_strings_with_nul_inside_and_empty():
    strings = ["a\0b", "\0", "", "\0\0x", "plain"]
    np.testing.assert_array_equal(ops.hash_strings(strings, 1000), ref_hash(strings, 1000))
    np.testing.assert_array_equal(ops.murmur3_32(["\0"]), [mmh3.hash("\0", 0, signed=False)])
    assert ops.hash_strings([], 10).shape == (0,)
    assert ops.hash_strings(np.array([], dtype=str), 10).shape == (0,)
    np.testing.assert_array_equal(ops.hash_strings([""], 10), ref_hash([""], 10))


def test_long_lists_go_through_in_chunks():
    strings = [f"s{i}" for i in range(70_000)]
    strings[40_000] = "nul\0inside"
    np.testing.assert_array_equal(ops.hash_strings(strings, 1009), ref_hash(strings, 1009))
    v = ops.Vocab(["s5", "s69999", "nul\0inside"])
    hits = v.lookup(strings)
    assert hits[5] == 1 and hits[69_999] == 2 and hits[40_000] == 3 and hits.sum() == 6
    texts = [f"Word{i % 7} x" for i in range(40_000)]
    ids, lengths = ops.tokenize(texts, 101)
    np.testing.assert_array_equal(ids[-5:], ref_tokenize(texts[-5:], 101)[0])
    np.testing.assert_array_equal(lengths, 3)
    strings[50_000] = 5
    with pytest.raises(TypeError, match=r"strings\[50000\]"):
        ops.hash_strings(strings, 10)


def test_hash_strings_rejects_bad_input():
    with pytest.raises(TypeError, match="strings"):
        ops.hash_strings("abc", 10)
    with pytest.raises(TypeError, match=r"strings\[1\]"):
        ops.hash_strings(["a", 3], 10)
    with pytest.raises(TypeError):
        ops.hash_strings([b"a"], 10)
    with pytest.raises(TypeError):
        ops.hash_strings(np.array([1, 2]), 10)
    with pytest.raises(TypeError):
        ops.hash_strings({"a"}, 10)
    with pytest.raises(ValueError, match="1-D"):
        ops.hash_strings(np.array([["a"]]), 10)
    with pytest.raises(ValueError, match="num_buckets"):
        ops.hash_strings(["a"], 0)
    with pytest.raises(TypeError, match="num_buckets"):
        ops.hash_strings(["a"], 2.5)
    with pytest.raises(TypeError, match="num_buckets"):
        ops.hash_strings(["a"], True)
    with pytest.raises(ValueError, match="seed"):
        ops.hash_strings(["a"], 10, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        ops.murmur3_32(["a"], seed=2**32)
    with pytest.raises(ValueError):  # a lone surrogate has no UTF-8 form
        ops.hash_strings(["ok", "\ud800"], 10)
    with pytest.raises(ValueError, match="surrogate"):
        ops.hash_strings(np.array(["ok", "\ud800"]), 10)


@HYP
@given(st.lists(st.text(max_size=40), max_size=30), st.integers(1, 2**40), st.integers(0, 2**32 - 1))
def test_hash_strings_property(strings, nb, seed):
    strings = [s for s in strings if not any(0xD800 <= ord(c) <= 0xDFFF for c in s)]
    np.testing.assert_array_equal(ops.hash_strings(strings, nb, seed), ref_hash(strings, nb, seed))


def ref_hash_ids(ids, nb, seed=0):
    return np.array(
        [mmh3.hash(int(i).to_bytes(8, "little", signed=True), seed, signed=False) % nb for i in ids],
        dtype=np.int64,
    )


ID_VALUES = np.array(
    [0, 1, -1, 2, 255, 256, 2**31, -(2**31), 2**62, 2**63 - 1, -(2**63), 123456789012345], np.int64
)


@pytest.mark.parametrize("nb", [1, 2, 1000, 1 << 20, 2**32 + 3, 2**63 - 1])
@pytest.mark.parametrize("seed", [0, 5, 2**32 - 1])
def test_hash_ids_matches_mmh3(nb, seed):
    ids = np.concatenate([ID_VALUES, RNG.integers(-(2**63), 2**63 - 1, 300, dtype=np.int64)])
    np.testing.assert_array_equal(ops.hash_ids(ids, nb, seed), ref_hash_ids(ids, nb, seed))


def test_hash_ids_xxh64():
    ids = np.concatenate([ID_VALUES, RNG.integers(-(2**63), 2**63 - 1, 200, dtype=np.int64)])
    for seed in (0, 7, 2**64 - 1):
        expected = [
            xxhash.xxh64_intdigest(int(i).to_bytes(8, "little", signed=True), seed) % 1009 for i in ids
        ]
        np.testing.assert_array_equal(ops.hash_ids(ids, 1009, seed, algorithm="xxh64"), expected)
    with pytest.raises(ValueError, match="algorithm"):
        ops.hash_ids(ids, 10, algorithm="md5")


def test_hash_ids_layouts_and_dtypes():
    ids = RNG.integers(-(10**12), 10**12, 64, dtype=np.int64)
    expected = ref_hash_ids(ids, 977)
    np.testing.assert_array_equal(ops.hash_ids(strided(ids), 977), expected)
    np.testing.assert_array_equal(ops.hash_ids(misaligned(ids), 977), expected)
    np.testing.assert_array_equal(ops.hash_ids(ids.astype(">i8"), 977), expected)
    np.testing.assert_array_equal(ops.hash_ids(ids.reshape(8, 8), 977), expected.reshape(8, 8))
    small = ids % 1000
    np.testing.assert_array_equal(ops.hash_ids(small.astype(np.int32), 977), ref_hash_ids(small, 977))
    np.testing.assert_array_equal(ops.hash_ids(small.astype(np.uint16), 977), ref_hash_ids(small, 977))
    big = np.array([2**64 - 1, 2**63], np.uint64)  # same 8 bytes as int64 -1 and -2**63
    np.testing.assert_array_equal(ops.hash_ids(big, 977), ref_hash_ids([-1, -(2**63)], 977))
    assert ops.hash_ids(np.array([], np.int64), 5).shape == (0,)
    with pytest.raises(TypeError, match="ids"):
        ops.hash_ids(np.array([1.0]), 5)
    with pytest.raises(TypeError, match="ids"):
        ops.hash_ids([1, 2], 5)
    with pytest.raises(ValueError, match="num_buckets"):
        ops.hash_ids(ids, -3)
    with pytest.raises(ValueError, match="limit"):
        ops.hash_ids(huge(np.int64), 5)


# ---------------------------------------------------------------------------------------------
# bucketize


def test_bucketize_matches_searchsorted():
    b = np.array([-np.inf, -1.0, 0.0, 0.5, 1.0, 2.0, 10.0])
    x = np.concatenate([RNG.normal(size=500) * 3, b, [np.nan, np.inf, -np.inf, -0.0, 1e300, -1e300]])
    for dt in (np.float64, np.float32):
        with np.errstate(over="ignore"):
            xs = x.astype(dt)
        out = ops.bucketize(xs, b)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, np.searchsorted(b, xs, side="right"))


def test_bucketize_forms_and_edges():
    x = RNG.random((7, 5))
    np.testing.assert_array_equal(
        ops.bucketize(x, [0.25, 0.5]), np.searchsorted([0.25, 0.5], x, side="right")
    )
    np.testing.assert_array_equal(ops.bucketize(x, np.array([0.5], np.float32)), (x >= 0.5).astype(np.int64))
    np.testing.assert_array_equal(ops.bucketize(x, np.array([])), np.zeros((7, 5), np.int64))
    np.testing.assert_array_equal(ops.bucketize(np.array([np.nan]), np.array([1.0, 2.0])), [2])
    assert ops.bucketize(np.array([]), [1.0]).shape == (0,)
    v = RNG.random(33)
    b = np.sort(RNG.random(9))
    np.testing.assert_array_equal(ops.bucketize(strided(v), strided(b)), np.searchsorted(b, v, side="right"))
    np.testing.assert_array_equal(
        ops.bucketize(misaligned(v), misaligned(b)), np.searchsorted(b, v, side="right")
    )
    np.testing.assert_array_equal(
        ops.bucketize(v, np.arange(3)), np.searchsorted(np.arange(3), v, side="right")
    )


def test_bucketize_rejects_bad_input():
    x = np.ones(3)
    for bad in ([1.0, 1.0], [2.0, 1.0], [0.0, np.nan, 2.0], [np.nan]):
        with pytest.raises(ValueError, match="strictly increasing"):
            ops.bucketize(x, bad)
    with pytest.raises(ValueError, match="1-D"):
        ops.bucketize(x, np.ones((2, 2)))
    with pytest.raises(TypeError, match="values"):
        ops.bucketize(np.arange(3), [1.0])
    with pytest.raises(TypeError, match="values"):
        ops.bucketize([1.0], [1.0])
    with pytest.raises(TypeError, match="boundaries"):
        ops.bucketize(x, ["a"])
    with pytest.raises(TypeError, match="boundaries"):
        ops.bucketize(x, np.array(["a"]))
    with pytest.raises(ValueError, match="limit"):
        ops.bucketize(huge(), [1.0])


@HYP
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=50),
    st.sets(st.floats(allow_nan=False, allow_infinity=True), max_size=20),
)
def test_bucketize_property(values, bounds):
    b = np.array(sorted(bounds), dtype=np.float64)
    x = np.array(values, dtype=np.float64)
    np.testing.assert_array_equal(ops.bucketize(x, b), np.searchsorted(b, x, side="right"))


# ---------------------------------------------------------------------------------------------
# elementwise


def ref_affine(x, p, q, minmax: bool):
    x64 = x.astype(np.float64)
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    den = q - p if minmax else q
    with np.errstate(all="ignore"):
        r = (x64 - p) / den
    return np.where(den == 0, np.where(np.isnan(x64), np.nan, 0.0), r)


def sample_matrix(n=40, d=5, dtype=np.float64):
    x = (RNG.normal(size=(n, d)) * 10).astype(dtype)
    x[0, 0] = np.nan
    x[1, 1] = np.inf
    x[2, 2] = -np.inf
    x[3, 3] = -0.0
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minmax_and_zscore(dtype):
    x = sample_matrix(dtype=dtype)
    lo = np.array([-5.0, 0.0, 1.0, 2.0, 3.0])
    hi = np.array([5.0, 0.0, 4.0, 2.0, 30.0])  # columns 1 and 3 are degenerate
    out = ops.minmax_scale(x, lo, hi)
    assert out.dtype == dtype and out.shape == x.shape
    close(out, ref_affine(x, lo, hi, True))
    close(ops.minmax_scale(x, -2.0, 7.5), ref_affine(x, -2.0, 7.5, True))
    close(ops.minmax_scale(x, 3, 3), ref_affine(x, 3.0, 3.0, True))
    close(ops.minmax_scale(x, lo, 100.0), ref_affine(x, lo, 100.0, True))
    close(ops.minmax_scale(x, [0, 1, 2, 3, 4], hi), ref_affine(x, np.arange(5.0), hi, True))
    std = np.array([1.0, 0.0, 2.5, 0.5, 1e-3])
    z = ops.zscore(x, lo, std)
    assert z.dtype == dtype
    close(z, ref_affine(x, lo, std, False))
    close(ops.zscore(x, 1.5, 2.0), ref_affine(x, 1.5, 2.0, False))
    close(ops.zscore(x, 1.5, 0.0), ref_affine(x, 1.5, 0.0, False))
    v = x[:, 0].copy()
    close(ops.zscore(v, 0.25, 4.0), ref_affine(v, 0.25, 4.0, False))
    close(ops.minmax_scale(v, 1.0, 1.0), ref_affine(v, 1.0, 1.0, True))
    # wide rows (more columns than the tile) and a single column
    w = RNG.random((3, 150)).astype(dtype)
    p = RNG.random(150)
    close(ops.zscore(w, p, p + 1), ref_affine(w, p, p + 1, False))
    # a subnormal denominator, whose reciprocal overflows, still divides correctly
    close(ops.minmax_scale(x, 0.0, 2.2e-311), ref_affine(x, 0.0, 2.2e-311, True))
    close(ops.zscore(x, lo, np.full(5, 1e-315)), ref_affine(x, lo, np.full(5, 1e-315), False))
    one = RNG.random((9, 1)).astype(dtype)
    close(ops.minmax_scale(one, np.array([0.5]), np.array([2.0])), ref_affine(one, 0.5, 2.0, True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip(dtype):
    x = sample_matrix(dtype=dtype)
    lo = np.array([-1.0, 0.0, -np.inf, 2.0, 0.0])
    hi = np.array([1.0, 0.0, 0.5, np.inf, 0.0])
    out = ops.clip(x, lo, hi)
    assert out.dtype == dtype
    expected = np.clip(x, lo.astype(dtype), hi.astype(dtype))
    close(out, expected)
    assert np.isnan(out[0, 0])
    close(ops.clip(x, -0.5, 0.25), np.clip(x, dtype(-0.5), dtype(0.25)))
    close(ops.clip(x[:, 2], 1, 1), np.where(np.isnan(x[:, 2]), np.nan, 1.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p(dtype):
    with np.errstate(over="ignore"):
        x = _log1p_inputs(dtype)
    with np.errstate(all="ignore"):
        expected = np.log1p(x.astype(np.float64))
    out = ops.log1p(x)
    assert out.dtype == dtype and out.shape == x.shape
    if dtype == np.float32:
        expected = expected.astype(np.float32)  # what a float32 result can hold at best
    close(out, expected)
    assert np.signbit(ops.log1p(np.array([-0.0], dtype)))[0]
    close(ops.log1p(x.reshape(-1, 2)), expected.reshape(-1, 2))


def _log1p_inputs(dtype):
    return np.concatenate(
        [
            RNG.uniform(-1, 1, 2000),
            10.0 ** RNG.uniform(-30, 30, 2000),
            -(10.0 ** RNG.uniform(-30, -1e-6, 500)),
            [-1.0, -2.0, -np.inf, np.inf, np.nan, 0.0, -0.0, 1e-300, 5e-324, 1e-8, 3.0, 1e300],
        ]
    ).astype(dtype)


def test_elementwise_layouts():
    x = sample_matrix()
    lo, hi = np.zeros(5), np.full(5, 3.0)
    close(ops.minmax_scale(strided(x), lo, hi), ref_affine(x, lo, hi, True))
    close(ops.minmax_scale(misaligned(x), misaligned(lo), strided(hi)), ref_affine(x, lo, hi, True))
    close(ops.zscore(x.T.copy().T, lo, hi), ref_affine(x, lo, hi, False))  # Fortran order
    close(ops.clip(misaligned(x), -1.0, 1.0), np.clip(x, -1, 1))
    with np.errstate(all="ignore"):
        close(ops.log1p(strided(x)), np.log1p(x))
        close(ops.log1p(misaligned(x)), np.log1p(x))
        close(ops.log1p(x.astype(">f8")), np.log1p(x))
    for fn in (ops.log1p, lambda a: ops.clip(a, 0, 1), lambda a: ops.zscore(a, 0, 1)):
        assert fn(np.zeros((0,))).shape == (0,)
        assert fn(np.zeros((0, 3))).shape == (0, 3)
        assert fn(np.zeros((4, 0))).shape == (4, 0)
        close(fn(np.array([0.5])), fn(np.array([0.5, 0.7]))[:1])


def test_elementwise_rejects_bad_input():
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"lo must be shape \(3,\)"):
        ops.minmax_scale(x, np.zeros(2), 1.0)
    with pytest.raises(ValueError, match="hi"):
        ops.minmax_scale(x, 0.0, np.zeros((3, 1)))
    with pytest.raises(ValueError, match="scalar for 1-D x"):
        ops.zscore(np.ones(4), np.zeros(4), 1.0)
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, d\)"):
        ops.log1p(np.ones((2, 2, 2))) if False else ops.zscore(np.ones((2, 2, 2)), 0.0, 1.0)
    with pytest.raises(TypeError, match="x"):
        ops.zscore(np.ones(3, np.int64), 0.0, 1.0)
    with pytest.raises(TypeError, match="x"):
        ops.log1p(np.ones(3, np.float16))
    with pytest.raises(TypeError, match="x"):
        ops.log1p([1.0, 2.0])
    with pytest.raises(TypeError, match="x"):
        ops.log1p(np.ma.masked_array([1.0]))
    with pytest.raises(TypeError, match="mean"):
        ops.zscore(x, "1", 1.0)
    with pytest.raises(TypeError, match="std"):
        ops.zscore(x, 0.0, None)
    with pytest.raises(ValueError, match="lo must be <= hi"):
        ops.clip(x, 2.0, 1.0)
    with pytest.raises(ValueError, match="column 1"):
        ops.clip(x, np.array([0.0, 2.0, 0.0]), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        ops.clip(x, np.nan, 1.0)
    with pytest.raises(ValueError, match="limit"):
        ops.log1p(huge())
    with pytest.raises(ValueError, match="limit"):
        ops.clip(huge(np.float32), 0, 1)


@HYP
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=60),
    st.floats(-1e6, 1e6),
    st.floats(-1e6, 1e6),
)
def test_elementwise_property(values, a, b):
    x = np.array(values, np.float32)
    lo, hi = min(a, b), max(a, b)
    with np.errstate(over="ignore"):
        expected = ref_affine(x, lo, hi, True).astype(np.float32)
    close(ops.minmax_scale(x, lo, hi), expected)
    close(ops.clip(x, lo, hi), np.clip(x, np.float32(lo), np.float32(hi)))
    with np.errstate(all="ignore"):
        close(ops.log1p(x), np.log1p(x.astype(np.float64)).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# one-hot / multi-hot


def ref_one_hot(ids, depth):
    out = np.zeros((len(ids), depth), np.float32)
    for i, v in enumerate(ids):
        if 0 <= int(v) < depth:
            out[i, int(v)] = 1
    return out


def test_one_hot():
    ids = np.array([0, 3, 9, -1, 10, 2**40, -(2**63), 5], np.int64)
    out = ops.one_hot(ids, 10)
    assert out.dtype == np.float32 and out.shape == (8, 10)
    np.testing.assert_array_equal(out, ref_one_hot(ids, 10))
    np.testing.assert_array_equal(
        ops.one_hot(ids.astype(np.int32), 10), ref_one_hot(ids.astype(np.int32), 10)
    )
    np.testing.assert_array_equal(ops.one_hot(np.array([1, 255], np.uint8), 4), ref_one_hot([1, 255], 4))
    np.testing.assert_array_equal(
        ops.one_hot(np.array([2**64 - 1, 3], np.uint64), 4), ref_one_hot([-1, 3], 4)
    )
    np.testing.assert_array_equal(ops.one_hot(strided(ids), 10), ref_one_hot(ids, 10))
    np.testing.assert_array_equal(ops.one_hot(misaligned(ids), 10), ref_one_hot(ids, 10))
    assert ops.one_hot(ids, 0).shape == (8, 0)
    assert ops.one_hot(np.array([], np.int64), 3).shape == (0, 3)
    with pytest.raises(ValueError, match="limit"):
        ops.one_hot(np.zeros(1000, np.int64), ops.MAX_ELEMENTS)
    with pytest.raises(ValueError, match="depth"):
        ops.one_hot(ids, -1)
    with pytest.raises(TypeError, match="ids"):
        ops.one_hot(np.array([1.0]), 3)
    with pytest.raises(TypeError, match="ids"):
        ops.one_hot(np.array([True]), 3)
    with pytest.raises(ValueError, match="1-D"):
        ops.one_hot(np.zeros((2, 2), np.int64), 3)


def ref_multi_hot(offsets, ids, depth):
    out = np.zeros((len(offsets) - 1, depth), np.float32)
    for r in range(len(offsets) - 1):
        for v in ids[offsets[r] : offsets[r + 1]]:
            if 0 <= v < depth:
                out[r, v] = 1
    return out


def test_multi_hot():
    ids = np.array([0, 2, 2, 7, -1, 3, 100, 1], np.int64)
    offsets = np.array([0, 3, 3, 6, 8], np.int64)
    out = ops.multi_hot(offsets, ids, 8)
    assert out.dtype == np.float32 and out.shape == (4, 8)
    np.testing.assert_array_equal(out, ref_multi_hot(offsets, ids, 8))
    np.testing.assert_array_equal(
        ops.multi_hot(np.array([1, 2, 5]), ids, 4), ref_multi_hot([1, 2, 5], ids, 4)
    )
    np.testing.assert_array_equal(
        ops.multi_hot(strided(offsets), misaligned(ids), 8), ref_multi_hot(offsets, ids, 8)
    )
    np.testing.assert_array_equal(ops.multi_hot(offsets.astype(np.int32), ids.astype(np.int16), 8), out)
    assert ops.multi_hot(np.array([0]), np.array([], np.int64), 5).shape == (0, 5)
    for bad, where in (
        ([0, 3, 2, 8], r"offsets\[2\]"),
        ([0, 9], r"offsets\[1\]"),
        ([-1, 2], r"offsets\[0\]"),
    ):
        with pytest.raises(ValueError, match=where):
            ops.multi_hot(np.array(bad), ids, 8)
    with pytest.raises(ValueError, match="n \\+ 1"):
        ops.multi_hot(np.array([], np.int64), ids, 8)
    with pytest.raises(ValueError, match="limit"):
        ops.multi_hot(np.zeros(3, np.int64), ids, ops.MAX_ELEMENTS)
    with pytest.raises(TypeError, match="offsets"):
        ops.multi_hot(np.array([0.0, 1.0]), ids, 8)


# ---------------------------------------------------------------------------------------------
# vocabulary


def test_vocab_lookup_positions_and_oov():
    tokens = ["apple", "banana", "", "日本", "a\0b", "cherry"]
    v = ops.Vocab(tokens)
    assert len(v) == 6
    queries = ["banana", "zzz", "", "日本", "a\0b", "a", "cherry", "apple", "Apple"]
    expected = [{t: i + 1 for i, t in enumerate(tokens)}.get(q, 0) for q in queries]
    out = v.lookup(queries)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(ops.vocab_lookup(np.array(["apple", "zzz"]), v), [1, 0])
    np.testing.assert_array_equal(ops.vocab_lookup(("cherry",), v), [6])
    np.testing.assert_array_equal(ops.Vocab(tokens, oov_id=-7, offset=100).lookup(["x", "banana"]), [-7, 101])
    assert v.lookup([]).shape == (0,)


def test_vocab_explicit_ids_and_big_table():
    mapping = {"x": 10, "y": -3, "z": 2**62}
    np.testing.assert_array_equal(
        ops.Vocab(mapping, oov_id=99).lookup(["z", "y", "q", "x"]), [2**62, -3, 99, 10]
    )
    tokens = [f"tok{i}" for i in range(20000)]
    v = ops.Vocab(tokens)
    q = [f"tok{i}" for i in RNG.integers(0, 30000, 5000)]
    d = {t: i + 1 for i, t in enumerate(tokens)}
    np.testing.assert_array_equal(v.lookup(q), [d.get(s, 0) for s in q])
    assert len(ops.Vocab([])) == 0 and ops.Vocab([]).lookup(["a"]).tolist() == [0]


def test_vocab_errors_and_lifetime():
    with pytest.raises(ValueError, match="duplicate token 'b' at position 2"):
        ops.Vocab(["a", "b", "b"])
    with pytest.raises(TypeError, match=r"tokens\[1\]"):
        ops.Vocab(["a", 1])
    with pytest.raises(TypeError, match="tokens"):
        ops.Vocab("abc")
    with pytest.raises(ValueError, match="oov_id"):
        ops.Vocab(["a"], oov_id=2**63)
    with pytest.raises(TypeError, match="vocab"):
        ops.vocab_lookup(["a"], {"a": 1})
    with pytest.raises(TypeError, match="strings"):
        ops.Vocab(["a"]).lookup("a")
    v = ops.Vocab(["a", "b"])
    ref = weakref.ref(v)
    del v
    gc.collect()
    assert ref() is None  # the table went with it (ffi.gc frees it)


# ---------------------------------------------------------------------------------------------
# event windows


def ref_window(ts, vals, now, windows):
    out = np.zeros((len(windows), 6))
    for j, w in enumerate(windows):
        m = (ts <= now) & (now - ts.astype(object) < w) if len(ts) else np.zeros(0, bool)
        v = vals[np.asarray(m, bool)]
        if len(v) == 0:
            out[j] = [0, 0, np.nan, np.nan, np.nan, np.nan]
        else:
            out[j] = [len(v), v.sum(), v.sum() / len(v), v.min(), v.max(), v[-1]]
    return out


def event_log(n=400, span=10_000):
    ts = np.sort(RNG.integers(0, span, n)).astype(np.int64)
    vals = RNG.random(n) * 10
    return ts, vals


def test_window_agg_matches_reference():
    ts, vals = event_log()
    windows = [0, 1, 10, 100, 1000, 5000, 10_000, 2**62]
    for now in (-5, 0, 10, 4321, 9999, 10_000, 20_000):
        close(ops.window_agg(ts, vals, now, windows), ref_window(ts, vals, now, windows))
    close(
        ops.window_agg(ts, vals, 5000, [100, 10, 1000, 10]), ref_window(ts, vals, 5000, [100, 10, 1000, 10])
    )
    close(ops.window_agg(ts, vals, 5000, np.array([7, 70])), ref_window(ts, vals, 5000, [7, 70]))


def test_window_agg_edges():
    ts = np.array([1, 3, 3, 3, 7, 9], np.int64)
    vals = np.array([1.0, 2.0, 3.0, 4.0, np.nan, 6.0])
    out = ops.window_agg(ts, vals, 3, [1, 3, 100])
    close(out, ref_window(ts, vals, 3, [1, 3, 100]))
    assert out[0].tolist()[:2] == [3.0, 9.0] and out[0, 5] == 4.0  # ties: last = the highest index
    close(ops.window_agg(ts, vals, 8, [2, 10]), ref_window(ts, vals, 8, [2, 10]))  # NaN propagates
    empty = ops.window_agg(np.array([], np.int64), np.array([]), 5, [10])
    close(empty, [[0, 0, np.nan, np.nan, np.nan, np.nan]])
    assert ops.window_agg(ts, vals, 3, []).shape == (0, 6)
    extreme = np.array([-(2**63), -5, 2**63 - 1], np.int64)  # no overflow in now - t
    ev = np.array([1.0, 2.0, 4.0])
    for now in (-(2**63), 0, 2**63 - 1):
        close(ops.window_agg(extreme, ev, now, [1, 2**63 - 1]), ref_window(extreme, ev, now, [1, 2**63 - 1]))
    close(ops.window_agg(strided(ts), misaligned(vals), 9, [5]), ref_window(ts, vals, 9, [5]))
    close(ops.window_agg(ts.astype(np.int32), vals.astype(np.float32), 9, [5]), ref_window(ts, vals, 9, [5]))


def test_window_agg_rejects_bad_input():
    ts, vals = event_log(10)
    with pytest.raises(ValueError, match=r"non-decreasing \(timestamps\[3\] < timestamps\[2\]\)"):
        ops.window_agg(np.array([1, 2, 5, 4, 6]), np.ones(5), 10, [5])
    with pytest.raises(ValueError, match="windows"):
        ops.window_agg(ts, vals, 10, [5, -1])
    with pytest.raises(ValueError, match="windows must be >= 0"):
        ops.window_agg(ts, vals, 10, np.array([-3]))
    with pytest.raises(ValueError, match="values has 9"):
        ops.window_agg(ts, vals[:9], 10, [5])
    with pytest.raises(TypeError, match="timestamps"):
        ops.window_agg(ts.astype(float), vals, 10, [5])
    with pytest.raises(TypeError, match="values"):
        ops.window_agg(ts, vals.astype(complex), 10, [5])
    with pytest.raises(TypeError, match="windows"):
        ops.window_agg(ts, vals, 10, 5)
    with pytest.raises(TypeError, match="now"):
        ops.window_agg(ts, vals, 1.5, [5])
    with pytest.raises(ValueError, match="now"):
        ops.window_agg(ts, vals, 2**63, [5])
    with pytest.raises(ValueError, match="1-D"):
        ops.window_agg(ts.reshape(2, 5), vals.reshape(2, 5), 10, [5])
    with pytest.raises(ValueError, match="2\\*\\*63-1"):
        ops.window_agg(np.array([2**63], np.uint64), np.ones(1), 10, [5])


def ref_grouped(keys, ts, vals, now, windows, g):
    return np.stack([ref_window(ts[keys == k], vals[keys == k], now, windows) for k in range(g)]).reshape(
        g, len(windows), 6
    )


def test_window_agg_grouped():
    ts, vals = event_log(600)
    keys = RNG.integers(0, 7, len(ts))
    windows = [60, 600, 3600, 0]
    for now in (0, 5000, 9999, 50_000):
        out = ops.window_agg_grouped(keys, ts, vals, now, windows, 9)
        assert out.shape == (9, 4, 6)
        close(out, ref_grouped(keys, ts, vals, now, windows, 9))
    close(
        ops.window_agg_grouped(strided(keys), misaligned(ts), strided(vals), 5000, [100], 7),
        ref_grouped(keys, ts, vals, 5000, [100], 7),
    )
    assert ops.window_agg_grouped(
        np.array([], np.int64), np.array([], np.int64), np.array([]), 1, [5], 0
    ).shape == (
        0,
        1,
        6,
    )
    with pytest.raises(ValueError, match=r"keys\[3\] = 7"):
        ops.window_agg_grouped(np.array([0, 1, 2, 7]), np.arange(4), np.ones(4), 5, [5], 7)
    with pytest.raises(ValueError, match=r"keys\[0\] = -1"):
        ops.window_agg_grouped(np.array([-1, 1]), np.arange(2), np.ones(2), 5, [5], 7)
    with pytest.raises(ValueError, match="non-decreasing"):
        ops.window_agg_grouped(np.zeros(3, np.int64), np.array([3, 2, 1]), np.ones(3), 5, [5], 1)
    with pytest.raises(ValueError, match="keys has 2"):
        ops.window_agg_grouped(np.zeros(2, np.int64), np.arange(3), np.ones(3), 5, [5], 1)
    with pytest.raises(ValueError, match="exceeds"):
        ops.window_agg_grouped(np.zeros(1, np.int64), np.arange(1), np.ones(1), 5, [5] * 100, 10**6)
    with pytest.raises(ValueError, match="num_groups"):
        ops.window_agg_grouped(np.zeros(1, np.int64), np.arange(1), np.ones(1), 5, [5], -1)


@HYP
@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 3), st.floats(-100, 100)), max_size=60),
    st.integers(-10, 70),
    st.lists(st.integers(0, 80), min_size=1, max_size=4),
)
def test_window_agg_property(events, now, windows):
    events.sort(key=lambda e: e[0])
    ts = np.array([e[0] for e in events], np.int64)
    keys = np.array([e[1] for e in events], np.int64)
    vals = np.array([e[2] for e in events], np.float64)
    close(ops.window_agg(ts, vals, now, windows), ref_window(ts, vals, now, windows), atol=1e-9)
    close(
        ops.window_agg_grouped(keys, ts, vals, now, windows, 4),
        ref_grouped(keys, ts, vals, now, windows, 4),
        atol=1e-9,
    )


def ref_decayed(ts, now, hl, keys=None, g=None, w=None):
    w = np.ones(len(ts)) if w is None else w
    m = ts <= now
    with np.errstate(over="ignore"):
        contrib = np.where(m, w * 0.5 ** ((now - ts.astype(np.float64)) / hl), 0.0)
    if keys is None:
        return contrib.sum()
    return np.bincount(keys, weights=contrib, minlength=g)


def test_decayed_count():
    ts = RNG.integers(0, 100_000, 3000).astype(np.int64)  # any order is fine here
    w = RNG.random(3000)
    keys = RNG.integers(0, 5, 3000)
    for now, hl in ((50_000, 3600.0), (100_000, 1.0), (10, 1e9), (0, 0.25)):
        total = ops.decayed_count(ts, now, hl)
        assert isinstance(total, float)
        close(total, ref_decayed(ts, now, hl))
        close(ops.decayed_count(ts, now, hl, weights=w), ref_decayed(ts, now, hl, w=w))
        g = ops.decayed_count(ts, now, hl, keys=keys, num_groups=6, weights=w)
        assert g.shape == (6,) and g[5] == 0
        close(g, ref_decayed(ts, now, hl, keys, 6, w))
    close(ops.decayed_count(np.array([0, 10]), 10, 1.0), 1.0 + 2.0**-10)
    close(ops.decayed_count(np.array([0]), 2000, 1.0), 0.0)  # underflows to 0
    close(ops.decayed_count(np.array([0]), 1050, 1.0), 2.0**-1050)  # subnormal, still exact-ish
    assert ops.decayed_count(np.array([11]), 10, 1.0) == 0.0
    assert ops.decayed_count(np.array([], np.int64), 10, 1.0) == 0.0
    close(ops.decayed_count(strided(ts), 7, 2, weights=misaligned(w)), ref_decayed(ts, 7, 2, w=w))
    with pytest.raises(ValueError, match="half_life"):
        ops.decayed_count(ts, 10, 0)
    with pytest.raises(ValueError, match="half_life"):
        ops.decayed_count(ts, 10, float("inf"))
    with pytest.raises(ValueError, match="half_life"):
        ops.decayed_count(ts, 10, 1e-320)
    with pytest.raises(TypeError, match="half_life"):
        ops.decayed_count(ts, 10, "1")
    with pytest.raises(ValueError, match="num_groups"):
        ops.decayed_count(ts, 10, 1.0, keys=keys)
    with pytest.raises(ValueError, match="num_groups"):
        ops.decayed_count(ts, 10, 1.0, num_groups=3)
    with pytest.raises(ValueError, match="keys must be in"):
        ops.decayed_count(ts, 10, 1.0, keys=keys, num_groups=3)
    with pytest.raises(ValueError, match="values has"):
        ops.decayed_count(ts, 10, 1.0, weights=w[:5])


# ---------------------------------------------------------------------------------------------
# top-k


def ref_top_k(x, k):
    order = sorted(
        range(len(x)), key=lambda i: (0 if np.isnan(x[i]) else 1, 0 if np.isnan(x[i]) else x[i], -i)
    )
    idx = np.array(order[::-1][:k], np.int64)
    return idx, x[idx]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [0, 1, 5, 37, 200, 5000, 6000, 10_000])
def test_top_k(dtype, k):
    x = np.round(RNG.normal(size=6000) * 5).astype(dtype)  # many ties
    x[RNG.integers(0, 6000, 30)] = np.nan
    x[10], x[11], x[12], x[13] = np.inf, -np.inf, -0.0, 0.0
    idx, vals = ops.top_k(x, k)
    ref_idx, ref_vals = ref_top_k(x, k)
    assert idx.dtype == np.int64 and vals.dtype == dtype
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(vals, ref_vals)


def test_top_k_edges():
    assert ops.top_k(np.array([]), 3)[0].shape == (0,)
    idx, vals = ops.top_k(np.array([np.nan, 1.0, np.nan]), 3)
    assert idx.tolist() == [1, 0, 2] and vals[0] == 1.0
    idx, _ = ops.top_k(np.array([-0.0, 0.0, -0.0]), 2)
    assert idx.tolist() == [0, 1]  # -0.0 == 0.0: lower index first
    x = RNG.random(300)
    np.testing.assert_array_equal(ops.top_k(strided(x), 7)[0], ref_top_k(x, 7)[0])
    np.testing.assert_array_equal(ops.top_k(misaligned(x), 7)[0], ref_top_k(x, 7)[0])
    with pytest.raises(ValueError, match="k must be"):
        ops.top_k(x, -1)
    with pytest.raises(TypeError, match="scores"):
        ops.top_k(np.arange(4), 2)
    with pytest.raises(ValueError, match="1-D"):
        ops.top_k(np.ones((2, 2)), 2)
    with pytest.raises(ValueError, match="limit"):
        ops.top_k(huge(), 2)


@HYP
@given(st.lists(st.floats(allow_nan=True, width=64), max_size=300), st.integers(0, 320))
def test_top_k_property(values, k):
    x = np.array(values, np.float64)
    idx, vals = ops.top_k(x, k)
    ref_idx, ref_vals = ref_top_k(x, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(vals, ref_vals)


# ---------------------------------------------------------------------------------------------
# image


def ref_image(img, oh, ow, mean, std):
    a = img.astype(np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, _ = a.shape

    def taps(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, wy = taps(h, oh)
    x0, x1, wx = taps(w, ow)
    wx = wx[None, :, None]
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bot = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    res = top * (1 - wy)[:, None, None] + bot * wy[:, None, None]
    res = (res / 255.0 - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
    return res.transpose(2, 0, 1)


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize(
    "shape,out", [((32, 48, 3), (24, 24)), ((10, 10, 3), (37, 23)), ((7, 5, 3), (7, 5)), ((1, 1, 3), (4, 3))]
)
def test_image_preprocess_rgb(shape, out):
    img = RNG.integers(0, 256, shape, dtype=np.uint8)
    res = ops.image_preprocess(img, *out, mean=MEAN, std=STD)
    assert res.dtype == np.float32 and res.shape == (3,) + out
    # float32 output: rtol 1e-6 plus an absolute 1e-6 for values that cancel to ~0
    close(res, ref_image(img, *out, MEAN, STD), atol=1e-6)


def test_image_preprocess_gray_crop_and_defaults():
    img = RNG.integers(0, 256, (40, 30), dtype=np.uint8)
    close(
        ops.image_preprocess(img, 16, 20, mean=0.5, std=0.25),
        ref_image(img, 16, 20, [0.5], [0.25]),
        atol=1e-6,
    )
    close(
        ops.image_preprocess(img[:, :, None], 9, 9, [0.1], [2.0]),
        ref_image(img, 9, 9, [0.1], [2.0]),
        atol=1e-6,
    )
    rgb = RNG.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    crop = rgb[5:45:2, 10:50]  # non-contiguous view
    close(ops.image_preprocess(crop, 12, 12), ref_image(crop, 12, 12, 0.0, 1.0), atol=1e-6)
    close(
        ops.image_preprocess(rgb, 8, 8, mean=np.array(MEAN), std=list(STD)),
        ref_image(rgb, 8, 8, MEAN, STD),
        atol=1e-6,
    )


def test_image_preprocess_rejects_bad_input():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        ops.image_preprocess(img.astype(np.float32), 2, 2)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ops.image_preprocess(np.zeros((4, 4, 4), np.uint8), 2, 2)
    with pytest.raises(ValueError, match="empty"):
        ops.image_preprocess(np.zeros((0, 4, 3), np.uint8), 2, 2)
    with pytest.raises(ValueError, match="std must not be 0"):
        ops.image_preprocess(img, 2, 2, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="mean must have 3"):
        ops.image_preprocess(img, 2, 2, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="finite"):
        ops.image_preprocess(img, 2, 2, mean=(0.5, np.nan, 0.5))
    with pytest.raises(ValueError, match="out_h"):
        ops.image_preprocess(img, 0, 2)
    with pytest.raises(ValueError, match="exceeds"):
        ops.image_preprocess(img, 2**15, 2**15)
    with pytest.raises(TypeError, match="img"):
        ops.image_preprocess(img.tolist(), 2, 2)


# ---------------------------------------------------------------------------------------------
# tokenizer

SEP = re.compile(
    "[\x00-/:-@\\[-`{-\x7f\x80-\xbf\xd7\xf7\u2000-\u206f\u3000-\u303f\ufeff"
    "\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]+"
)


def ref_tokenize(texts, nb, ngrams=(1, 2), max_tokens=32, seed=0, pad=-1):
    ids = np.full((len(texts), max_tokens), pad, np.int64)
    lengths = np.zeros(len(texts), np.int64)
    for r, text in enumerate(texts):
        words = [w for w in SEP.split(text.lower()) if w]
        toks = []
        for i in range(len(words)):
            for n in ngrams:
                if i + n <= len(words):
                    toks.append(mmh3.hash(" ".join(words[i : i + n]), seed, signed=False) % nb)
        toks = toks[:max_tokens]
        ids[r, : len(toks)] = toks
        lengths[r] = len(toks)
    return ids, lengths


TEXTS = [
    "Hello, World! hello   world",
    "",
    "   ...   ",
    "The QUICK brown fox -- jumps over the lazy dog's back (twice)",
    "Ünïcödé ÀÉÎ straße İstanbul ΣΊΣΥΦΟΣ",
    "中文，标点。「引号」和　全角空格",
    "ＦＵＬＬＷＩＤＴＨ　ｌｅｔｔｅｒｓ！１２３",
    "em—dash…ellipsis “quotes” ‘single’ non\u00a0breaking",
    "tabs\tand\nnewlines\r\nand\0nul",
    "emoji 🎉 party 🎉🎉 time",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3,
]


@pytest.mark.parametrize("ngrams", [(1,), (1, 2), (2, 1), (1, 2, 3), (3,)])
def test_tokenize_matches_reference(ngrams):
    ids, lengths = ops.tokenize(TEXTS, 10007, ngrams=ngrams, max_tokens=40, seed=3)
    ref_ids, ref_lengths = ref_tokenize(TEXTS, 10007, ngrams, 40, 3)
    assert ids.dtype == np.int64 and ids.shape == (len(TEXTS), 40)
    np.testing.assert_array_equal(lengths, ref_lengths)
    np.testing.assert_array_equal(ids, ref_ids)


def test_tokenize_options_and_forms():
    ascii_texts = ["Alpha beta GAMMA", "delta-epsilon"]
    np.testing.assert_array_equal(ops.tokenize(ascii_texts, 97)[0], ref_tokenize(ascii_texts, 97)[0])
    ids, lengths = ops.tokenize(TEXTS, 50, max_tokens=3, pad_id=0)
    ref_ids, ref_lengths = ref_tokenize(TEXTS, 50, max_tokens=3, pad=0)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(lengths, ref_lengths)
    np.testing.assert_array_equal(ops.tokenize(np.array(TEXTS), 77)[0], ref_tokenize(TEXTS, 77)[0])
    np.testing.assert_array_equal(ops.tokenize(tuple(TEXTS), 2**40)[0], ref_tokenize(TEXTS, 2**40)[0])
    assert ops.tokenize([], 10)[0].shape == (0, 32)


def test_tokenize_rejects_bad_input():
    with pytest.raises(ValueError, match="repeat"):
        ops.tokenize(["a"], 10, ngrams=(1, 1))
    with pytest.raises(ValueError, match=r"ngrams\[0\]"):
        ops.tokenize(["a"], 10, ngrams=(0,))
    with pytest.raises(TypeError, match="ngrams"):
        ops.tokenize(["a"], 10, ngrams=())
    with pytest.raises(ValueError, match="max_tokens"):
        ops.tokenize(["a"], 10, max_tokens=0)
    with pytest.raises(ValueError, match="exceeds"):
        ops.tokenize(["a"] * 10, 10, max_tokens=ops.MAX_ELEMENTS)
    with pytest.raises(TypeError, match="texts"):
        ops.tokenize("some text", 10)
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        ops.tokenize([None], 10)


@HYP
@given(
    st.lists(st.text(alphabet="aB1 ,.-\t\0é—Σ中。！ｘ", max_size=40), max_size=8),
    st.sampled_from([(1,), (1, 2), (2, 3, 1)]),
    st.integers(1, 12),
)
def test_tokenize_property(texts, ngrams, max_tokens):
    ids, lengths = ops.tokenize(texts, 1000, ngrams=ngrams, max_tokens=max_tokens)
    ref_ids, ref_lengths = ref_tokenize(texts, 1000, ngrams, max_tokens)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(lengths, ref_lengths)


# ---------------------------------------------------------------------------------------------
# the C layer on its own: bad offsets, oversized requests and NULL-separated buffers that lie are
# refused by C itself, not only by the wrapper


def test_c_layer_checks_its_own_inputs():
    offs = np.array([0, 2, 100], np.int64)  # past the end of a 3-byte buffer
    out = np.zeros(2, np.int64)
    assert (
        lib.ops_hash_strings(b"abc", 3, ffi.from_buffer(offs), 2, 0, 10, ffi.from_buffer(out))
        == lib.OPS_EOFFSETS
    )
    assert lib.ops_hash_strings(b"a\0b", 3, ffi.NULL, 3, 0, 10, ffi.from_buffer(np.zeros(3, np.int64))) == (
        lib.OPS_ESEPARATOR
    )
    bad = np.array([0, 5, 1], np.int64)
    res = np.zeros((2, 4), np.float32)
    ids = np.zeros(5, np.int64)
    assert (
        lib.ops_multi_hot(ffi.from_buffer(bad), 2, ffi.from_buffer(ids), 5, 4, ffi.from_buffer(res), ffi.NULL)
        == lib.OPS_EOFFSETS
    )
    assert not res.any()
    big = np.zeros(1, np.float32)
    assert lib.ops_one_hot_i64(ffi.from_buffer(ids), 5, 2**62, ffi.from_buffer(big)) == lib.OPS_EINVAL
    img = np.zeros(3, np.uint8)
    m = np.zeros(1)
    assert (
        lib.ops_image_preprocess(
            ffi.from_buffer(img), 1, 1, 3, 2**20, 2**20, ffi.from_buffer(m), ffi.from_buffer(m), ffi.NULL
        )
        == lib.OPS_ETOOBIG
    )


# ---------------------------------------------------------------------------------------------
# the GIL is released while C runs


def test_native_ops_release_the_gil():
    """A Python thread must run while the main thread is inside a native op.

    With a huge switch interval the main thread never hands the GIL over on its own, so the helper
    thread can only see `in_call` set if a native call releases the GIL.
    """
    x = RNG.random(3_000_000)
    ts = np.arange(3_000_000, dtype=np.int64)
    state = {"in_call": False, "hits": 0, "stop": False}

    def spin():
        while not state["stop"]:
            if state["in_call"]:
                state["hits"] += 1
            time.sleep(0)  # blocks briefly, so the main thread gets the GIL back after its call

    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    t = threading.Thread(target=spin)
    try:
        t.start()
        for _ in range(20):
            state["in_call"] = True
            for _ in range(3):
                ops.decayed_count(ts, 3_000_000, 1000.0)
                ops.log1p(x)
                ops.top_k(x, 10)
            state["in_call"] = False
            if state["hits"]:
                break
    finally:
        state["stop"] = True
        t.join()
        sys.setswitchinterval(old)
    assert state["hits"] > 0
