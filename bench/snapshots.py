"""Feature snapshots: what ``edge.features.get`` costs a script, what a call reading a 4 MB snapshot
costs next to one that reads none, and how long a swap takes, in one run.

- ``get_ns`` / ``dict_ns``: one ``edge.features.get(name)`` inside a script loop, and one lookup of a
  plain module-level dict in the same loop shape, same bundle, same run (thread mode).
- ``call_ratio_thread`` / ``call_ratio_process``: p50 of an inference that reads one value of each of
  the snapshot's columns, over the p50 of the same inference reading a module-level array instead
  (~1.0 means no per-call copy of the 4 MB).
- ``swap_ms``: ``Runtime.load_snapshot`` of a 4 MB encrypted snapshot (verify, decrypt, check, swap),
  median; ``first_call_after_swap_ms`` (process mode): the call that carries the new version to the
  worker, median, next to ``steady_call_ms``.

    python bench/snapshots.py [--iters 2000]

Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from vm.bundle import keys as keys_mod  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402
from vm.tools import snapshot as builder  # noqa: E402
from vm.tools.packer import pack  # noqa: E402

ROWS = 250_000  # 4 columns of 4 bytes: 4 MB
TARGET = f"{sys.version_info.major}.{sys.version_info.minor}"
SOURCE = """
import edge
import numpy as np

PLAIN = {"pop": 1}
LOCAL = np.zeros(16, dtype=np.float32)


def entry(inputs):
    k = inputs.get("k", 0)
    if inputs.get("loop") == "get":
        for _ in range(k):
            edge.features.get("pop")
        return k
    if inputs.get("loop") == "dict":
        for _ in range(k):
            PLAIN["pop"]
        return k
    i = inputs["i"]
    if inputs.get("snap"):
        cols = edge.features.get("pop")
        return float(cols["a"][i] + cols["b"][i] + cols["c"][i] + cols["d"][i])
    return float(LOCAL[i % 16] * 4)
"""


def build(d: Path) -> tuple[Path, list[Path]]:
    keys_mod.generate(d / "keys")
    src = d / "src"
    src.mkdir()
    (src / "features.py").write_text(textwrap.dedent(SOURCE))
    (src / "bundle.json").write_text(json.dumps({"name": "bench", "version": "1.0.0", "system": "s",
                                                 "entries": {"b": "features:entry"}, "snapshots": ["pop"]}))
    pack(src, d / "keys", d / "bench.evb", targets=[TARGET])
    snaps = []
    for v in range(1, 12):
        out = d / f"pop-{v}.evs"
        builder.build("pop", f"{v}.0", d / "keys", out, encrypt=True,
                      columns={c: np.full(ROWS, v, dtype=np.float32) for c in "abcd"})
        snaps.append(out)
    return d / "bench.evb", snaps


def p50_ms(rt: Runtime, inputs: dict, iters: int) -> float:
    lat = []
    for n in range(iters):
        t0 = time.perf_counter()
        rt.infer("s", "b", {**inputs, "i": n % ROWS})
        lat.append((time.perf_counter() - t0) * 1000)
    return statistics.median(lat)


def call_ratio(rt: Runtime, iters: int) -> tuple[float, float, float]:
    """(p50 reading the snapshot, p50 reading a local array, ratio), rounds alternated."""
    snap, local = [], []
    for _ in range(5):
        snap.append(p50_ms(rt, {"snap": True}, iters // 5))
        local.append(p50_ms(rt, {}, iters // 5))
    s, loc = statistics.median(snap), statistics.median(local)
    return s, loc, s / loc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2000)
    args = parser.parse_args()
    out: dict[str, float | int] = {"snapshot_bytes": ROWS * 16}
    with tempfile.TemporaryDirectory() as tmp:
        bundle, snaps = build(Path(tmp))
        keys = Path(tmp) / "keys"
        with Runtime({"keys": keys, "isolation": "thread", "deadline_ms": 10_000}) as rt:
            rt.load_snapshot(snaps[0])
            rt.load(bundle)
            k = 200_000
            loops = {"get": [], "dict": []}
            for _ in range(5):
                for kind in loops:
                    t0 = time.perf_counter()
                    rt.infer("s", "b", {"loop": kind, "k": k})
                    loops[kind].append((time.perf_counter() - t0) * 1e9 / k)
            out["get_ns"] = round(statistics.median(loops["get"]), 1)
            out["dict_ns"] = round(statistics.median(loops["dict"]), 1)
            out["get_vs_dict_ratio"] = round(out["get_ns"] / out["dict_ns"], 2)
            s, loc, ratio = call_ratio(rt, args.iters)
            out.update(call_snapshot_p50_ms_thread=round(s, 4), call_local_p50_ms_thread=round(loc, 4),
                       call_ratio_thread=round(ratio, 3))
            swaps = []
            for f in snaps[1:6]:
                t0 = time.perf_counter()
                rt.load_snapshot(f)
                swaps.append((time.perf_counter() - t0) * 1000)
            out["swap_ms"] = round(statistics.median(swaps), 2)
        with Runtime({"keys": keys, "isolation": "process", "deadline_ms": 10_000}) as rt:
            rt.load_snapshot(snaps[0])
            rt.load(bundle)
            p50_ms(rt, {"snap": True}, 50)  # warm
            s, loc, ratio = call_ratio(rt, args.iters)
            out.update(call_snapshot_p50_ms_process=round(s, 4), call_local_p50_ms_process=round(loc, 4),
                       call_ratio_process=round(ratio, 3))
            first = []
            for f in snaps[1:]:
                rt.load_snapshot(f)
                t0 = time.perf_counter()
                rt.infer("s", "b", {"snap": True, "i": 0})
                first.append((time.perf_counter() - t0) * 1000)
            out["first_call_after_swap_ms"] = round(statistics.median(first), 3)
            out["steady_call_ms"] = round(s, 4)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
