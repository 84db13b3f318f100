"""edgevm embedded in a native program: the C host (tests/host/host.c) driven end to end.

    python tests/host/run_demo.py [--keys KEYS_DIR] [--out OUT_DIR]

1. builds libedgevm (if needed) and compiles the host like an app: ``gcc host.c $(edgevm capi-flags)``;
2. if OUT_DIR holds the example ranking bundle (``home-rerank.evb`` and ``request.json`` from
   ``make demo``), the host loads it and re-ranks the request from 4 threads, checking every result
   against the Python API's;
3. runs the full host scenario on the C API demo bundle (tests/host/bundle): two handles, results
   equal to the Python API's, 4 threads sync and async, event-triggered tasks through a listener,
   misuse, a script stuck in a native call answered at its deadline, every way of closing.

Prints what the host did; exits non-zero if any check failed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import msgpack

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import hostbuild  # noqa: E402


def run(cmd: list[str]) -> int:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout.rstrip())
    if proc.returncode != 0:
        print(proc.stderr.rstrip()[-3000:], file=sys.stderr)
    return proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=Path, help="keygen directory (default: fresh keys)")
    parser.add_argument("--out", type=Path, help="where to write the host and its data (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgevm-capi-demo-") as tmp:
        out = (args.out or Path(tmp)).resolve()
        work = out / "capi"
        work.mkdir(parents=True, exist_ok=True)

        hostbuild.library()
        flags = " ".join(hostbuild.capi_flags())
        host = work / "host"
        print(f"$ gcc tests/host/host.c $(edgevm capi-flags) -o {host}\n  edgevm capi-flags: {flags}")
        hostbuild.build_host(host)

        scenario = hostbuild.prepare(work, keys_dir=args.keys.resolve() if args.keys else None)
        failed = 0
        rerank, request = out / "home-rerank.evb", out / "request.json"
        if rerank.exists() and request.exists():
            cases = work / "rerank-cases"
            payload = msgpack.packb(json.loads(request.read_text()), use_bin_type=True)
            hostbuild.write_cases(cases, scenario.keys, rerank, "home", "rerank", [payload])
            print(f"\n$ {host.name} --serve --bundle {rerank.name} --system home --business rerank --threads 4")
            failed |= run([str(host), "--keys", str(scenario.keys), "--bundle", str(rerank), "--cases", str(cases),
                           "--serve", "--system", "home", "--business", "rerank", "--threads", "4", "--iters", "25"])
        print(f"\n$ {host.name} --bundle {scenario.bundle.name} (the C API scenario)")
        failed |= run([str(host), *scenario.host_args()])
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
