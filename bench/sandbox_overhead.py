"""Sandbox overhead: realistic pure-Python workloads run as plain CPython (``exec`` of the same
source, direct call) and through pack → load → ``Runtime.infer``, interleaved in one process; and
the cost of loading a 64 KB bundle against the floor of its cryptography.

Last line: one JSON object with ``overhead_ratio_median`` (sandboxed / plain, median over the
workloads), ``load_ms_median`` (verify + decrypt + gate + unmarshal + verify bytecode) and
``floor_ms`` (signature verification + decryption alone, same run). Targets: ratio <= 1.05,
load <= 2 x floor. Each workload also reports ``wire_ms``: msgpack-encoding its inputs and decoding
them again, measured in the same loop.

Why ``features`` is ~2x plain while the others are ~1x: it is the boundary, not the sandbox. Its
inputs are 1000 events (75 KB of msgpack) for about 1 ms of work, and ``Runtime.infer`` copies them
across the wire as every call must (encode on the caller's side, decode on the worker's: in both
isolation modes a script gets its own plain copy, never the host's objects), which costs about as
much as the work itself (``wire_ms``); the script then works on freshly built objects (string
values not shared with its constants, hashes not cached yet), some 10-20 % slower than on the
plain run's long-lived inputs; the hand-off to a worker thread and back adds ~0.1 ms a call.
Measured with cProfile and by calling the sandboxed entry function directly (no wire, no worker
thread): the sandbox's own share (verified code, guarded builtins, the memory budget, the
deadline) is within noise of plain CPython. A host on the C API hands msgpack bytes already, so it
skips the encode half; a script that needs the same large data on every call is better served by
the event store than by its inputs.
"""
from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import msgpack
import nacl.bindings
from nacl.public import SealedBox

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vm.bundle import format as bundle_format  # noqa: E402
from vm.bundle import keys, loader  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402
from vm.tools.packer import pack  # noqa: E402

FEATURES = """
from collections import Counter, defaultdict
import math


def entry(inputs):
    events = inputs["events"]
    by_user = defaultdict(list)
    for e in events:
        by_user[e["user"]].append(e)
    out = {}
    for user, evs in by_user.items():
        evs.sort(key=lambda e: e["ts"])
        clicks = [e for e in evs if e["type"] == "click"]
        cats = Counter(e["cat"] for e in clicks)
        dwell = [e["dwell"] for e in evs if e["dwell"] > 0]
        gaps = [b["ts"] - a["ts"] for a, b in zip(evs, evs[1:])]
        top = cats.most_common(3)
        out[user] = {
            "n": len(evs), "ctr": len(clicks) / len(evs),
            "top": [c for c, _ in top],
            "dwell_mean": sum(dwell) / len(dwell) if dwell else 0.0,
            "dwell_log": math.log1p(max(dwell)) if dwell else 0.0,
            "gap_p50": sorted(gaps)[len(gaps) // 2] if gaps else 0,
            "price_z": _zs([e["price"] for e in evs]),
            "pages": sorted({e["page"] for e in evs}),
        }
    return {"users": len(out), "sample": out[min(out)]}


def _zs(xs):
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / len(xs)
    sd = math.sqrt(var) or 1.0
    return [round((x - m) / sd, 4) for x in xs[:5]]
"""

BPE = """
def entry(inputs):
    text = inputs["text"]
    merges = {}
    words = [list(w) + ["</w>"] for w in text.lower().split()]
    for _ in range(inputs["merges"]):
        pairs = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + 1
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges[best] = len(merges)
        joined = best[0] + best[1]
        new_words = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words.append(out)
        words = new_words
    vocab = sorted({t for w in words for t in w})
    return {"merges": len(merges), "vocab": len(vocab), "first": words[0]}
"""

NUMERIC = """
import math


def entry(inputs):
    pts = inputs["points"]
    k = inputs["k"]
    cents = [list(p) for p in pts[:k]]
    for _ in range(inputs["iters"]):
        groups = [[] for _ in range(k)]
        for p in pts:
            best, bd = 0, float("inf")
            for j, c in enumerate(cents):
                d = (p[0] - c[0]) ** 2 + (p[1] - c[1]) ** 2 + (p[2] - c[2]) ** 2
                if d < bd:
                    best, bd = j, d
            groups[best].append(p)
        for j, g in enumerate(groups):
            if g:
                cents[j] = [sum(p[i] for p in g) / len(g) for i in range(3)]
    inertia = sum(min(sum((a - b) ** 2 for a, b in zip(p, c)) for c in cents) for p in pts)
    return {"inertia": round(math.sqrt(inertia), 6), "cents": [[round(x, 6) for x in c] for c in cents]}
"""


def make_inputs(rng: random.Random) -> dict[str, dict]:
    events = [{"user": f"u{rng.randrange(40)}", "ts": 1_700_000_000_000 + i * rng.randrange(200, 4000),
               "type": rng.choice(["view", "view", "click", "cart"]), "cat": rng.randrange(30),
               "price": round(rng.lognormvariate(3, 1), 2), "dwell": rng.randrange(0, 60000),
               "page": rng.choice(["JD_HOME", "JD_SEARCH", "JD_ITEM"])} for i in range(1000)]
    words = ["shoe", "shoes", "running", "runner", "red", "reading", "lamp", "lamps", "desk", "desktop",
             "phone", "phones", "case", "cases", "charger", "charging", "cable", "cables"]
    text = " ".join(rng.choice(words) for _ in range(800))
    points = [[rng.gauss(c, 1.0) for c in (rng.choice([0, 5, 10]),) * 3] for _ in range(600)]
    return {"features": {"events": events}, "bpe": {"text": text, "merges": 40},
            "numeric": {"points": points, "k": 4, "iters": 8}}


def plain_entry(source: str):
    namespace: dict = {"__name__": "plain"}
    exec(compile(source, "plain.py", "exec"), namespace)
    return namespace["entry"]


def timed(fn, arg) -> float:
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def synthetic_module(i: int) -> str:
    body = []
    for j in range(12):
        body.append(textwrap.dedent(f"""
            def f{i}_{j}(events, scale={j + 1}):
                totals = {{}}
                for e in events:
                    key = (e.get("cat", 0) * {j + 3}) % 17
                    totals[key] = totals.get(key, 0.0) + e.get("price", 0.0) * scale
                ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
                return [k for k, v in ranked[:{j + 2}] if v > {j}] or [str(len(events)) + "_{i}_{j}"]
            """))
    return "\n".join(body)


def build_64k(tmp: Path, keys_dir: Path) -> bytes:
    src = tmp / "big"
    src.mkdir()
    files = {"features.py": "def entry(inputs):\n    return 0\n"}
    for i in range(40):
        files[f"lib{i}.py"] = synthetic_module(i)
    n = 0
    out = tmp / "big.evb"
    for name, text in files.items():
        (src / name).write_text(text)
        n += 1
        (src / "bundle.json").write_text(json.dumps({"name": "big", "version": "1.0.0", "system": "s",
                                                     "entries": {"b": "features:entry"}}))
        if n > 1 and n % 4 == 0:
            pack(src, keys_dir, out, targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"])
            if out.stat().st_size >= 64 * 1024:
                break
    pack(src, keys_dir, out, targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"])
    return out.read_bytes()


def main() -> None:
    rng = random.Random(7)
    inputs = make_inputs(rng)
    sources = {"features": FEATURES, "bpe": BPE, "numeric": NUMERIC}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        keys.generate(tmp / "keys")
        rt = Runtime({"keys": tmp / "keys", "deadline_ms": 60_000, "workers": 1, "isolation": "thread"})
        for name, source in sources.items():
            src = tmp / name
            src.mkdir()
            (src / "features.py").write_text(source)
            (src / "bundle.json").write_text(json.dumps({"name": name, "version": "1.0.0", "system": "bench",
                                                         "entries": {name: "features:entry"}}))
            pack(src, tmp / "keys", tmp / f"{name}.evb", targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"])
            rt.load(tmp / f"{name}.evb")

        results = {}
        for name, source in sources.items():
            plain = plain_entry(source)
            assert json.loads(json.dumps(plain(inputs[name]))) == rt.infer("bench", name, inputs[name])

            def boxed(arg, name=name):
                return rt.infer("bench", name, arg)

            def wire(arg):
                return msgpack.unpackb(msgpack.packb(arg, use_bin_type=True), raw=False, strict_map_key=False)

            plain_t, boxed_t, wire_t = [], [], []
            for _ in range(3):
                plain(inputs[name])
                boxed(inputs[name])
            for _ in range(25):
                plain_t.append(timed(plain, inputs[name]))
                boxed_t.append(timed(boxed, inputs[name]))
                wire_t.append(timed(wire, inputs[name]))
            p, b, w = statistics.median(plain_t), statistics.median(boxed_t), statistics.median(wire_t)
            results[name] = {"plain_ms": round(p * 1000, 3), "sandboxed_ms": round(b * 1000, 3),
                             "ratio": round(b / p, 4), "wire_ms": round(w * 1000, 3)}
            print(f"{name:10s} plain {p * 1000:8.3f} ms   sandboxed {b * 1000:8.3f} ms   ratio {b / p:.3f}")
        rt.close()

        data = build_64k(tmp, tmp / "keys")
        device = keys.load_device(tmp / "keys")
        raw = bundle_format.split(data, 1 << 26)
        header = loader.verify(raw, device)
        secret = device.decrypt[raw.seal_key_id]

        def floor() -> None:
            device.verify[raw.sign_key_id].verify(raw.signed, raw.signature)
            key = SealedBox(secret).decrypt(header.sealed_key)
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(raw.ciphertext, raw.aad, header.nonce, key)

        def load() -> None:
            loader.open_bundle(data, device, max_size=1 << 26)

        floor_t, load_t = [], []
        for _ in range(5):
            floor()
            load()
        for _ in range(60):
            floor_t.append(timed(lambda _: floor(), None))
            load_t.append(timed(lambda _: load(), None))
        f, ld = statistics.median(floor_t) * 1000, statistics.median(load_t) * 1000
        print(f"load of a {len(data)} byte bundle: {ld:.3f} ms; crypto floor {f:.3f} ms; ratio {ld / f:.2f}")

    ratio = statistics.median(r["ratio"] for r in results.values())
    print(json.dumps({"overhead_ratio_median": round(ratio, 4), "load_ms_median": round(ld, 4),
                      "floor_ms": round(f, 4), "load_floor_ratio": round(ld / f, 3), "bundle_bytes": len(data),
                      "workloads": results}))


if __name__ == "__main__":
    main()
