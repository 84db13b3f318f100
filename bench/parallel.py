"""Ranking throughput in thread mode: 1 caller on 1 worker thread against 2 concurrent callers on
2 worker threads.

The same realistic re-ranking request (a heavy user's recent events, 150 candidates) is served
as fast as possible. There are as many callers as workers, each waiting for its answer before the
next call: with more callers than core workers, the normal and low queues' workers help with core
tasks, and "1 worker" would not be one. Native ops and ONNX Runtime release the GIL, the Python
parts of the script do not, so the scaling says how much of an inference is GIL-free (process mode,
bench/isolation.py, is the way past that on GIL CPython). The run alternates the two configurations
and keeps the median of each.

On free-threaded CPython (3.14t, GIL off) the Python parts run in parallel too, in thread mode.

    parallel.py [--isolation thread|process] [--vs PYTHON]

``--vs PYTHON`` also measures the single caller under another interpreter (say 3.11's venv python) in
the same run and reports ``latency_ratio``: this interpreter's single-caller latency over that one's.

Last line: JSON with ``throughput_1``, ``throughput_2`` (inferences per second), ``scaling``,
``latency_ms_1`` (one caller), the interpreter (``python``, ``gil_enabled``) and the isolation mode.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from infer_e2e import big_request  # noqa: E402

from examples.ranking import build_bundle  # noqa: E402
from vm.bundle import keys  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402

SECONDS = 2.0


def throughput(bundle: Path, keys_dir: Path, workers: int, payload: bytes, isolation: str = "thread") -> float:
    """Inferences per second of ``workers`` concurrent callers on ``workers`` workers."""
    rt = Runtime({"keys": keys_dir, "deadline_ms": 5000, "workers": workers, "isolation": isolation})
    rt.load(bundle)
    for _ in range(20):
        rt.infer_msgpack("home", "rerank", payload)
    clients = workers
    done = [0] * clients
    stop = time.perf_counter() + SECONDS
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        start.wait()
        n = 0
        while time.perf_counter() < stop:
            rt.infer_msgpack("home", "rerank", payload)
            n += 1
        done[i] = n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    rt.close()
    return sum(done) / elapsed


def _gil_enabled() -> bool:
    return getattr(sys, "_is_gil_enabled", lambda: True)()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isolation", choices=("thread", "process"), default="thread")
    ap.add_argument("--vs", metavar="PYTHON", help="also measure one caller under this interpreter")
    ap.add_argument("--single", action="store_true", help="only one caller (what --vs runs)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        out = Path(td)
        keys.generate(out / "keys")
        build_bundle.main(out, out / "keys", targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"])
        payload = msgpack.packb(big_request(), use_bin_type=True)
        bundle = out / "home-rerank.evb"
        one, two = [], []
        for _ in range(3):
            one.append(throughput(bundle, out / "keys", 1, payload, args.isolation))
            if args.single:
                continue
            two.append(throughput(bundle, out / "keys", 2, payload, args.isolation))
            print(f"1 caller, 1 worker {one[-1]:8.1f}/s   2 callers, 2 workers {two[-1]:8.1f}/s")
    t1 = statistics.median(one)
    result = {"throughput_1": round(t1, 1), "latency_ms_1": round(1000 / t1, 3), "isolation": args.isolation,
              "python": sys.version.split()[0], "gil_enabled": _gil_enabled(), "seconds_per_run": SECONDS}
    if not args.single:
        t2 = statistics.median(two)
        result.update(throughput_2=round(t2, 1), scaling=round(t2 / t1, 3))
    if args.vs:
        proc = subprocess.run([args.vs, __file__, "--single", "--isolation", args.isolation], capture_output=True,
                              text=True, check=True)
        other = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update(vs_python=other["python"], vs_latency_ms_1=other["latency_ms_1"],
                      latency_ratio=round(result["latency_ms_1"] / other["latency_ms_1"], 3))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
