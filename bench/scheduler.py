"""Scheduler benchmark: small-task throughput, and the core queue's latency with and without a flood
of low-priority work, in one run.

    .venv/bin/python bench/scheduler.py [--tasks 20000] [--probes 3600] [--flood-normal]

1. throughput: ``--tasks`` small async tasks spread over the three queues, kept ``--window`` in
   flight; tasks completed per second (then on the core queue alone: normal and low workers release
   the GIL between back-to-back tasks, which costs tiny tasks throughput; see docs/scheduler.md).
2. core latency, idle: ``--probes`` sequential synchronous core calls (``infer_msgpack``, what the C
   API's ``edgevm_infer`` does), a short pause between them; p50/p99 of submit-to-result.
3. core latency, flood: the same while the low queue is kept full (every finished low task queues
   another, so the backlog never drains), and the normal queue too with ``--flood-normal``.
   Idle and flood rounds alternate (``--rounds``) so that load from other processes hits both alike.
   Also reported: how late the probing thread runs again after each pause (timer slack plus the wait
   for the GIL: what a host thread entering a call pays while low work runs).

Last line: JSON with tasks_per_s, core_p99_idle_ms, core_p99_flood_ms, flood_ratio (target <= 1.5).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vm.bundle import keys as keys_mod  # noqa: E402
from vm.errors import Busy  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402
from vm.tools.packer import pack  # noqa: E402

SCRIPT = '''
def small(inputs):
    xs = inputs["xs"]
    total = 0
    for x in xs:
        total += x * x
    return {"n": len(xs), "total": total}
'''


def build(root: Path) -> tuple[Path, Path]:
    keys_dir = root / "keys"
    keys_mod.generate(keys_dir)
    src = root / "src"
    src.mkdir()
    (src / "features.py").write_text(SCRIPT)
    (src / "bundle.json").write_text(json.dumps({"name": "bench", "version": "1.0.0", "system": "bench",
                                                 "entries": {"small": "features:small"}}))
    out = root / "bench.evb"
    pack(src, keys_dir, out, targets=[f"{sys.version_info.major}.{sys.version_info.minor}"])
    return keys_dir, out


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def throughput(rt: Runtime, payload: bytes, n: int, window: int, prios: tuple[str, ...]) -> float:
    sem = threading.Semaphore(window)
    done = threading.Event()
    left = [n]
    lock = threading.Lock()

    def cb(status: int, data: bytes) -> None:
        sem.release()
        with lock:
            left[0] -= 1
            if not left[0]:
                done.set()

    t0 = time.perf_counter()
    for i in range(n):
        sem.acquire()
        while True:
            try:
                rt.infer_async("bench", "small", payload, cb, priority=prios[i % len(prios)], deadline_ms=10_000)
                break
            except Busy:
                time.sleep(0.0005)
    done.wait()
    return n / (time.perf_counter() - t0)


def core_latency(rt: Runtime, payload: bytes, probes: int, pause_s: float,
                 wakes: list[float] | None = None) -> list[float]:
    """Latencies of sequential sync core calls. ``wakes`` gets how late this thread ran again after
    each pause: the timer's slack plus any wait for the GIL (what a host thread entering a call pays)."""
    samples = []
    for _ in range(probes):
        t0 = time.perf_counter()
        rt.infer_msgpack("bench", "small", payload, priority="core", deadline_ms=10_000)
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        time.sleep(pause_s)
        if wakes is not None:
            wakes.append(time.perf_counter() - t1 - pause_s)
    return samples


class Flood:
    """Keeps ``depth`` tasks queued on each flooded queue: every completion queues another."""

    def __init__(self, rt: Runtime, payload: bytes, depth: int, queues: tuple[str, ...]) -> None:
        self.rt, self.payload, self.stop = rt, payload, False
        self.completed = 0
        self.refused = 0
        for q in queues:
            for _ in range(depth):
                self._submit(q)

    def _submit(self, q: str) -> None:
        def cb(status: int, data: bytes) -> None:
            self.completed += 1
            if not self.stop:
                self._submit(q)

        try:
            self.rt.infer_async("bench", "small", self.payload, cb, priority=q, deadline_ms=1000)
        except Busy:
            self.refused += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--probes", type=int, default=3600)
    ap.add_argument("--rounds", type=int, default=12, help="idle/flood rounds, alternating")
    ap.add_argument("--pause-ms", type=float, default=0.5)
    ap.add_argument("--depth", type=int, default=256, help="flood backlog per flooded queue")
    ap.add_argument("--flood-normal", action="store_true", help="flood the normal queue as well")
    ap.add_argument("--items", type=int, default=32, help="numbers per task input")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        keys_dir, bundle = build(Path(tmp))
        payload = msgpack.packb({"xs": list(range(args.items))})
        rt = Runtime({"keys": keys_dir, "deadline_ms": 1000, "queue_size": 4096, "isolation": "thread"})
        try:
            rt.load(bundle)
            core_latency(rt, payload, 200, 0)  # warm up
            tps = throughput(rt, payload, args.tasks, args.window, ("core", "normal", "low"))
            tps_core = throughput(rt, payload, args.tasks, args.window, ("core",))
            # Idle and flood rounds alternate, so that background load on the machine hits both alike.
            idle: list[float] = []
            flooded: list[float] = []
            wake_idle: list[float] = []
            wake_flood: list[float] = []
            per_round = max(1, args.probes // args.rounds)
            flood_done, flood_s, refused = 0, 0.0, 0
            for _ in range(args.rounds):
                idle += core_latency(rt, payload, per_round, args.pause_ms / 1000, wake_idle)
                flood = Flood(rt, payload, args.depth, ("low", "normal") if args.flood_normal else ("low",))
                time.sleep(0.02)
                before, t0 = flood.completed, time.perf_counter()
                flooded += core_latency(rt, payload, per_round, args.pause_ms / 1000, wake_flood)
                flood_s += time.perf_counter() - t0
                flood_done += flood.completed - before
                flood.stop = True
                refused += flood.refused
                deadline = time.monotonic() + 30
                while rt.stats()["in_flight"] and time.monotonic() < deadline:
                    time.sleep(0.005)
            metrics = rt.metrics()
        finally:
            rt.close()

    idle_p99, flood_p99 = pct(idle, 0.99), pct(flooded, 0.99)
    result = {
        "tasks_per_s": round(tps),
        "tasks_per_s_core_only": round(tps_core),
        "core_p50_idle_ms": round(pct(idle, 0.5), 4),
        "core_p99_idle_ms": round(idle_p99, 4),
        "core_p50_flood_ms": round(pct(flooded, 0.5), 4),
        "core_p99_flood_ms": round(flood_p99, 4),
        "core_mean_idle_ms": round(statistics.fmean(idle) * 1000, 4),
        "core_mean_flood_ms": round(statistics.fmean(flooded) * 1000, 4),
        "flood_ratio": round(flood_p99 / idle_p99, 3),
        "wake_p99_idle_ms": round(pct(wake_idle, 0.99), 4),
        "wake_p99_flood_ms": round(pct(wake_flood, 0.99), 4),
        "flood_tasks_per_s_during_probe": round(flood_done / flood_s),
        "flood_refused": refused,
        "totals": metrics["totals"],
    }
    print(f"throughput            {result['tasks_per_s']:>10} tasks/s over the three queues, "
          f"{result['tasks_per_s_core_only']} on the core queue alone")
    print(f"core p50/p99 idle     {result['core_p50_idle_ms']:>8.3f} / {idle_p99:.3f} ms")
    print(f"core p50/p99 flood    {result['core_p50_flood_ms']:>8.3f} / {flood_p99:.3f} ms  "
          f"({result['flood_tasks_per_s_during_probe']} low tasks/s ran meanwhile)")
    print(f"thread wake-up p99    {result['wake_p99_idle_ms']:>8.3f} idle / {result['wake_p99_flood_ms']:.3f} ms flood "
          f"(after a {args.pause_ms} ms sleep: timer slack + waiting for the GIL)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
