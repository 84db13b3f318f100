"""Counters and latency histograms per (task kind, entry), cheap enough for every task.

A ``Histogram`` has fixed log-spaced buckets (8 per power of two from 1 µs to ~140 s, about 9 %
relative precision), so memory is constant whatever the traffic and percentiles (p50/p90/p99) are
read from the bucket counts. ``Metrics.snapshot()`` returns plain data (msgpack-able): it is what
``Runtime.metrics()`` and the C API hand to the host.
"""
from __future__ import annotations

import math
import threading
from typing import Any

_PER_OCTAVE = 8
_BUCKETS = 27 * _PER_OCTAVE + 1  # 1 µs .. 2**27 µs (~134 s), one overflow bucket
_LOG_SCALE = _PER_OCTAVE / math.log(2)

COUNTERS = ("submitted", "refused", "done", "failed", "timed_out", "cancelled")


class Histogram:
    """Durations in seconds, bucketed logarithmically; not thread-safe (``Series`` locks)."""

    __slots__ = ("counts", "total", "sum_s", "max_s")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.total = 0
        self.sum_s = 0.0
        self.max_s = 0.0

    def record(self, seconds: float) -> None:
        us = seconds * 1e6
        i = 0 if us <= 1.0 else min(int(math.log(us) * _LOG_SCALE) + 1, _BUCKETS - 1)
        self.counts[i] += 1
        self.total += 1
        self.sum_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds

    def percentile(self, q: float) -> float:
        """The upper bound (seconds) of the bucket holding the ``q``-quantile; 0.0 when empty."""
        if not self.total:
            return 0.0
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(2.0 ** (i / _PER_OCTAVE) / 1e6, self.max_s)
        return self.max_s

    def snapshot(self) -> dict[str, float]:
        ms = 1000.0
        return {"count": self.total,
                "p50_ms": round(self.percentile(0.50) * ms, 4),
                "p90_ms": round(self.percentile(0.90) * ms, 4),
                "p99_ms": round(self.percentile(0.99) * ms, 4),
                "max_ms": round(self.max_s * ms, 4),
                "mean_ms": round(self.sum_s / self.total * ms, 4) if self.total else 0.0}


class Series:
    """Counters plus queue-wait and run-time histograms of one (kind, entry)."""

    __slots__ = ("lock", "counts", "queue_wait", "run_time")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.queue_wait = Histogram()
        self.run_time = Histogram()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {**self.counts, "queue_wait_ms": self.queue_wait.snapshot(),
                    "run_ms": self.run_time.snapshot()}


class Metrics:
    """All series of one runtime, created on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], Series] = {}

    def series(self, kind: str, entry: str) -> Series:
        key = (kind, entry)
        s = self._series.get(key)
        if s is None:
            with self._lock:
                s = self._series.setdefault(key, Series())
        return s

    def count(self, kind: str, entry: str, counter: str, n: int = 1) -> None:
        s = self.series(kind, entry)
        with s.lock:
            s.counts[counter] += n

    def settle(self, kind: str, entry: str, counter: str, wait_s: float | None, run_s: float | None) -> None:
        """One task ended as ``counter``; record its queue wait and run time when known."""
        s = self.series(kind, entry)
        with s.lock:
            s.counts[counter] += 1
            if wait_s is not None:
                s.queue_wait.record(wait_s)
            if run_s is not None:
                s.run_time.record(run_s)

    def snapshot(self) -> dict[str, Any]:
        """``{"tasks": {kind: {entry: {...}}}, "totals": {counter: n}}``."""
        with self._lock:
            items = list(self._series.items())
        tasks: dict[str, dict[str, Any]] = {}
        totals = dict.fromkeys(COUNTERS, 0)
        for (kind, entry), s in sorted(items):
            snap = s.snapshot()
            tasks.setdefault(kind, {})[entry] = snap
            for c in COUNTERS:
                totals[c] += snap[c]
        return {"tasks": tasks, "totals": totals}
