"""Real programs in the sandbox: the pyperformance benchmark bodies of tests/fixtures/pyperformance/
(only vetted modules; harness replaced by ``entry(inputs)``), each packed, loaded and run through
``Runtime.infer`` in thread mode, against the same source as plain CPython (``exec``, direct call),
alternating in one process. Workloads are sized to tens of milliseconds, so the per-call cost of
the boundary (msgpack in and out, the hand-off to a worker thread: ~0.1 ms) stays small.

Last line: one JSON object with ``ratio_median`` (sandboxed / plain, median over the programs;
target <= 1.05) and each program's medians and ratio.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vm.bundle import keys  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402
from vm.tools.packer import pack  # noqa: E402

PROGRAMS = ROOT / "tests" / "fixtures" / "pyperformance"
# Inputs per program: big enough for tens of milliseconds a call.
INPUTS: dict[str, dict] = {
    "bm_chaos": {"size": 128, "iterations": 4000}, "bm_deltablue": {"n": 2000}, "bm_fannkuch": {"n": 8},
    "bm_float": {"points": 20000}, "bm_go": {}, "bm_hexiom": {"level": 25}, "bm_json_dumps": {"scale": 4},
    "bm_nbody": {"iterations": 5000}, "bm_nqueens": {"queens": 7}, "bm_raytrace": {"size": 40},
    "bm_richards": {"iterations": 3}, "bm_spectral_norm": {"n": 120},
}
ROUNDS = 15


def plain_entry(source: str, name: str):
    namespace: dict = {"__name__": name}
    exec(compile(source, f"{name}.py", "exec"), namespace)
    return namespace["entry"]


def timed(fn, arg) -> float:
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def main() -> None:
    names = sorted(p.stem for p in PROGRAMS.glob("bm_*.py"))
    results = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        keys.generate(tmp / "keys")
        src = tmp / "programs"
        src.mkdir()
        for name in names:
            (src / f"{name}.py").write_text((PROGRAMS / f"{name}.py").read_text())
        (src / "bundle.json").write_text(json.dumps({"name": "programs", "version": "1.0.0", "system": "bench",
                                                     "entries": {n: f"{n}:entry" for n in names}}))
        pack(src, tmp / "keys", tmp / "programs.evb", targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"])
        with Runtime({"keys": tmp / "keys", "deadline_ms": 600_000, "workers": 1, "isolation": "thread"}) as rt:
            rt.load(tmp / "programs.evb")
            for name in names:
                args = INPUTS.get(name, {})
                plain = plain_entry((PROGRAMS / f"{name}.py").read_text(), name)

                def boxed(arg, name=name):
                    return rt.infer("bench", name, arg)

                assert json.loads(json.dumps(plain(args))) == boxed(args), name
                plain_t, boxed_t = [], []
                for _ in range(ROUNDS):
                    plain_t.append(timed(plain, args))
                    boxed_t.append(timed(boxed, args))
                p, b = statistics.median(plain_t), statistics.median(boxed_t)
                results[name[3:]] = {"plain_ms": round(p * 1000, 3), "sandboxed_ms": round(b * 1000, 3),
                                     "ratio": round(b / p, 4)}
                print(f"{name[3:]:14s} plain {p * 1000:9.3f} ms   sandboxed {b * 1000:9.3f} ms   ratio {b / p:.3f}")
    ratio = statistics.median(r["ratio"] for r in results.values())
    print(json.dumps({"ratio_median": round(ratio, 4), "programs": results}))


if __name__ == "__main__":
    main()
