"""The same demo inference through the C API and through the Python API, in one run.

The C side is the real host program (``tests/host/host.c`` in ``--bench`` mode: ``edgevm_infer``
from a native thread, result checked against the Python API's); the Python side is
``Runtime.infer_msgpack`` in this process. Both use the same bundle, input, runtime config and
machine; rounds alternate between the two so that background load hits both alike, and each side
reports the median of its rounds' p50 latencies.

    python bench/capi.py [--rounds 5] [--iters 2000] [--spin-us N]

Last line: JSON with ``capi_p50_ms``, ``python_p50_ms`` and ``ratio`` (target: <= 1.2).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "host"))

import hostbuild  # noqa: E402

from vm.host.runtime import Runtime  # noqa: E402

CONFIG = {"deadline_ms": 1000, "workers": 2, "isolation": "thread"}  # host.c gets the same (--isolation)


def python_round(rt: Runtime, payload: bytes, expect: bytes, iters: int) -> float:
    lat = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = rt.infer_msgpack(hostbuild.SYSTEM, hostbuild.BUSINESS, payload)
        lat.append((time.perf_counter() - t0) * 1000)
        if out != expect:
            raise SystemExit("the Python API's result changed between calls")
    lat.sort()
    return lat[len(lat) // 2]


def capi_round(host: Path, scenario: hostbuild.Scenario, iters: int, spin_us: int | None) -> float:
    spin = [] if spin_us is None else ["--spin-us", str(spin_us)]
    out = subprocess.run([str(host), *scenario.host_args(), "--bench", str(iters), *spin, "--isolation",
                          CONFIG["isolation"]], check=True,
                         capture_output=True, text=True).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    if doc["mismatches"]:
        raise SystemExit(f"the C API's results differ from the Python API's: {doc}")
    return doc["capi_p50_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--spin-us", type=int, help="the C API's capi_spin_us (default: the library's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgevm-bench-capi-") as tmp:
        work = Path(tmp)
        scenario = hostbuild.prepare(work, n_cases=1)
        host = hostbuild.build_host(work / "host")
        payload, expect = scenario.inputs[0], scenario.outputs[0]
        capi, python = [], []
        with Runtime({"keys": str(scenario.keys), **CONFIG}) as rt:
            rt.load(scenario.bundle)
            python_round(rt, payload, expect, args.iters // 5)  # warm up
            for r in range(args.rounds):
                capi.append(capi_round(host, scenario, args.iters, args.spin_us))
                python.append(python_round(rt, payload, expect, args.iters))
                print(f"round {r + 1}: C API p50 {capi[-1]:.4f} ms, Python API p50 {python[-1]:.4f} ms",
                      file=sys.stderr)
    c, p = statistics.median(capi), statistics.median(python)
    print(json.dumps({"capi_p50_ms": round(c, 4), "python_p50_ms": round(p, 4), "ratio": round(c / p, 3),
                      "rounds": args.rounds, "iters": args.iters, "capi_spin_us": args.spin_us,
                      "capi_rounds_ms": capi,
                      "python_rounds_ms": [round(x, 4) for x in python]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
