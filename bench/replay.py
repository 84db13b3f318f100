"""Replay throughput: the ranking example bundle over logged requests, by the local engine with one
and with N workers and by Ray Data on a local cluster with N actors, each result checked against
the in-process runtime's for the same request (the baseline, measured in the same run).

    python bench/replay.py [--rows 3000] [--workers 2] [--isolation process|thread]

Rows per second are end to end for a job (start the workers or actors, load the bundle, read,
run, write); the local Ray cluster is started before, as a real cluster runs before jobs are
submitted to it (its start-up is reported as ray_init_s). The last line is one JSON object: rows, local_rows_per_s_1, local_rows_per_s_n,
ray_rows_per_s, scaling (n workers / 1), ray_vs_local (Ray / local at the same worker count),
mismatches (rows whose result differs from the in-process runtime's, over all three runs).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--isolation", choices=("process", "thread"), default="process")
    args = ap.parse_args()

    import msgpack
    import pyarrow as pa
    import pyarrow.parquet as pq

    from examples.ranking import build_bundle, train
    from vm import Runtime
    from vm.bundle import keys
    from vm.tools.replay import replay

    work = Path(tempfile.mkdtemp(prefix="edgevm-bench-replay-"))
    try:
        keys.generate(work / "keys")
        build_bundle.main(work, work / "keys", targets=[f"{sys.version_info.major}.{sys.version_info.minor}"])
        bundle = work / "home-rerank.evb"
        slates = train.build_dataset(0)["slates"]
        requests = [build_bundle.to_request(slates[i % len(slates)]["slate"], k=10) for i in range(args.rows)]
        pq.write_table(pa.Table.from_pylist([{"request_id": i, **r} for i, r in enumerate(requests)]),
                       work / "requests.parquet")
        with Runtime({"keys": str(work / "keys"), "isolation": "thread", "deadline_ms": 10_000}) as rt:
            rt.load(bundle)
            baseline = [rt.infer_msgpack("home", "rerank", msgpack.packb(r, use_bin_type=True)) for r in requests]

        # A cluster is running before a job is submitted to it: start the local one first, and report
        # its start-up apart (a job starts its actors, loads the bundle, reads and writes: timed).
        import logging
        import time

        import ray

        t0 = time.monotonic()
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level=logging.WARNING)
        ray_init_s = time.monotonic() - t0
        mismatches = 0
        speed = {}
        for label, engine, workers in (("local_1", "local", 1), ("local_n", "local", args.workers),
                                       ("ray", "ray", args.workers)):
            out = work / f"out-{label}"
            done = replay(bundle, work / "keys", work / "requests.parquet", system="home", business="rerank",
                          out=out, engine=engine, workers=workers, config={"isolation": args.isolation})
            rows = pq.read_table(out).to_pylist()
            got = {r["key"]: r["result"] for r in rows}
            mismatches += sum(got.get(i) != want for i, want in enumerate(baseline))
            speed[label] = done.rows_per_s
            print(f"{label}: {done.rows} rows, {done.errors} errors, {done.rows_per_s:.0f} rows/s", file=sys.stderr)
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"rows": args.rows, "workers": args.workers, "isolation": args.isolation,
                      "local_rows_per_s_1": round(speed["local_1"], 1), "local_rows_per_s_n": round(speed["local_n"], 1),
                      "ray_rows_per_s": round(speed["ray"], 1),
                      "scaling": round(speed["local_n"] / speed["local_1"], 3),
                      "ray_vs_local": round(speed["ray"] / speed["local_n"], 3), "ray_init_s": round(ray_init_s, 2),
                      "mismatches": mismatches}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
