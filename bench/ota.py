"""Over-the-air update on one device, end to end over a real HTTP server on loopback, in one run.

- ``update_ms``: ``edgevm publish`` of a 1 MB bundle, then ``update_now()`` until the new version
  answers (TUF refresh, download, verify, hot swap); the median of ``--updates`` rounds.
- ``swap_p99_ratio``: inference p99 of the calls made while a hot swap runs (update_now of the next
  version) under steady load, over the p99 of the same load in the steady window just before each
  swap (same run, same threads; target <= 1.5); ``failed_during_swap``: calls that failed during the
  swaps (target 0).
- ``rollback_ms``: a bad version (every call raises) activated -> the good version serving again
  (probation sees the failures, the updater swaps back).

    python bench/ota.py [--updates 3] [--swaps 6] [--window-s 1.0] [--threads 2]

Last line: JSON with those keys.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vm.bundle import keys as keys_mod  # noqa: E402
from vm.errors import EdgeError  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402
from vm.tools import publish  # noqa: E402
from vm.tools.packer import pack  # noqa: E402

GOOD = "VERSION = {version!r}\n\ndef entry(inputs):\n    return {{'version': VERSION, 'x': inputs.get('x', 0) * 2}}\n"
BAD = "VERSION = {version!r}\n\ndef entry(inputs):\n    raise ValueError('a bad release')\n"
PAD_BYTES = 1 << 20
PROBATION = 20  # calls: the version before the bad one passes it, so there is a good one to go back to


def make_bundle(work: Path, keys: Path, version: str, source: str) -> Path:
    """A bundle of about 1 MB (a random constant in the script: bundles carry scripts and models),
    packed for this interpreter."""
    src = work / f"src-{version}"
    src.mkdir()
    (src / "features.py").write_text(source.format(version=version) + f"\nPAD = {os.urandom(PAD_BYTES // 2).hex()!r}\n")
    (src / "bundle.json").write_text(json.dumps({"name": "feat", "version": version, "system": "s",
                                                 "entries": {"b": "features:entry"}}))
    out = work / f"feat-{version}.evb"
    pack(src, keys, out, targets=[f"{sys.version_info.major}.{sys.version_info.minor}"])
    return out


class Load:
    """``threads`` callers running inferences back to back; latencies tagged with the phase they started in."""

    def __init__(self, rt: Runtime, threads: int) -> None:
        self.rt = rt
        self.phase = "idle"
        self.lat: dict[str, list[float]] = {"steady": [], "swap": []}
        self.failed: dict[str, int] = {"steady": 0, "swap": 0}
        self.errors: list[str] = []  # the first few failures, named
        self.stop = False
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stop:
            phase = self.phase
            t0 = time.perf_counter()
            try:
                self.rt.infer("s", "b", {"x": 1})
                ok = True
            except EdgeError as exc:
                ok = False
                if len(self.errors) < 3:
                    self.errors.append(f"{phase}: {exc.name}: {exc}")
            ms = (time.perf_counter() - t0) * 1000
            if phase in self.lat and self.phase == phase:
                with self.lock:
                    if ok:
                        self.lat[phase].append(ms)
                    else:
                        self.failed[phase] += 1

    def close(self) -> None:
        self.stop = True
        for t in self.threads:
            t.join()


def p99(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--swaps", type=int, default=6)
    ap.add_argument("--window-s", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgevm-ota-bench-") as tmp:
        work = Path(tmp)
        keys, channel_dir, role_keys = work / "keys", work / "channel", work / "channel-keys"
        keys_mod.generate(keys)
        root = publish.init_channel(channel_dir, role_keys)
        handler = functools.partial(_Quiet, directory=str(channel_dir))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        n_versions = args.updates + args.swaps
        bundles = [make_bundle(work, keys, f"1.0.{i}", GOOD) for i in range(n_versions)]
        bundle_bytes = bundles[0].stat().st_size
        bad = make_bundle(work, keys, f"1.0.{n_versions}", BAD)
        rt = Runtime({"keys": str(keys), "isolation": "thread", "update": {
            "channel": url, "state_dir": str(work / "state"), "root": str(root), "interval_s": 0,
            "device_id": "bench", "probation_calls": PROBATION, "probation_failures": 2}})
        confirmed: set[str] = set()
        good = threading.Condition()

        def on_event(e: dict) -> None:
            if e["event"] == "confirmed":
                with good:
                    confirmed.add(e["version"])
                    good.notify_all()

        rt.set_update_listener(on_event)
        try:
            update_ms = []
            for i in range(args.updates):
                t0 = time.perf_counter()
                publish.publish(bundles[i], channel_dir, role_keys)
                events = [e["event"] for e in rt.update_now()]
                assert events[-1] == "activated", events
                assert rt.infer("s", "b", {"x": 1})["version"] == f"1.0.{i}"
                update_ms.append((time.perf_counter() - t0) * 1000)
            load = Load(rt, args.threads)
            try:
                for i in range(args.updates, n_versions):
                    publish.publish(bundles[i], channel_dir, role_keys)  # before the windows: the swap times the device
                    load.phase = "steady"
                    time.sleep(args.window_s)
                    load.phase = "swap"
                    events = [e["event"] for e in rt.update_now()]
                    assert events[-1] == "activated", events
                    load.phase = "idle"
                    time.sleep(0.05)  # let the calls of the swap window end
            finally:
                load.close()
            for _ in range(PROBATION):
                rt.infer("s", "b", {"x": 1})
            last = f"1.0.{n_versions - 1}"
            with good:
                assert good.wait_for(lambda: last in confirmed, 60), f"{last} was never confirmed"
            publish.publish(bad, channel_dir, role_keys)
            assert [e["event"] for e in rt.update_now()][-1] == "activated"
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 60:
                try:
                    if rt.infer("s", "b", {"x": 1})["version"] != bad.stem.split("-")[1]:
                        break
                except EdgeError:
                    pass  # the bad version failing: what probation counts
            rollback_ms = (time.perf_counter() - t0) * 1000
        finally:
            rt.close()
            server.shutdown()
            server.server_close()
    steady, swap = load.lat["steady"], load.lat["swap"]
    result = {"update_ms": round(statistics.median(update_ms), 1), "bundle_bytes": bundle_bytes,
              "steady_p99_ms": round(p99(steady), 3), "swap_p99_ms": round(p99(swap), 3),
              "swap_p99_ratio": round(p99(swap) / p99(steady), 3), "steady_calls": len(steady),
              "swap_calls": len(swap), "failed_during_swap": load.failed["swap"],
              "failed_steady": load.failed["steady"], "errors": load.errors, "rollback_ms": round(rollback_ms, 1),
              "swaps": args.swaps, "threads": args.threads}
    print(f"update {result['update_ms']} ms for {result['bundle_bytes']} bytes; p99 steady "
          f"{result['steady_p99_ms']} ms, during swaps {result['swap_p99_ms']} ms; rollback {result['rollback_ms']} ms")
    print(json.dumps(result))
    return 0


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
