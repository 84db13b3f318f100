"""Counters and latency histograms per (task kind, entry, bundle version), cheap enough for every task.

A ``Histogram`` has fixed log-spaced buckets (8 per power of two from 1 µs to ~140 s, about 9 %
relative precision), so memory is constant whatever the traffic and percentiles (p50/p90/p99) are
read from the bucket counts. ``Metrics.snapshot()`` returns plain data (msgpack-able): it is what
``Runtime.metrics()`` and the C API hand to the host. A task of a bundle (``Task.bundle``: its name and
version) counts in its version's own series, so a newly activated version's counters start at zero
and never mix with the old one's (the updater's probation reads them: ``version_counts``); the
``tasks`` view merges versions.
"""
from __future__ import annotations

import math
import threading
from typing import Any

_PER_OCTAVE = 8
_BUCKETS = 27 * _PER_OCTAVE + 1  # 1 µs .. 2**27 µs (~134 s), one overflow bucket
_LOG_SCALE = _PER_OCTAVE / math.log(2)

COUNTERS = ("submitted", "refused", "done", "failed", "timed_out", "cancelled")
SETTLED = ("done", "failed", "timed_out", "cancelled")
Bundle = tuple[str, str] | None  # (name, version) of the bundle a task runs, None for the runtime's own


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

    def add(self, other: Histogram) -> None:
        """Count ``other``'s durations in this one too (merging versions' series)."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.sum_s += other.sum_s
        self.max_s = max(self.max_s, other.max_s)

    def snapshot(self) -> dict[str, float]:
        ms = 1000.0
        return {"count": self.total,
                "p50_ms": round(self.percentile(0.50) * ms, 4),
                "p90_ms": round(self.percentile(0.90) * ms, 4),
                "p99_ms": round(self.percentile(0.99) * ms, 4),
                "max_ms": round(self.max_s * ms, 4),
                "mean_ms": round(self.sum_s / self.total * ms, 4) if self.total else 0.0}


class Series:
    """Counters plus queue-wait and run-time histograms of one (kind, entry, bundle). ``faults``
    counts the settled tasks the entry is to blame for (timeouts, crashes, script errors; not bad
    input or a refusal): what the updater's probation and the circuit breakers judge by."""

    __slots__ = ("lock", "counts", "faults", "queue_wait", "run_time")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.faults = 0
        self.queue_wait = Histogram()
        self.run_time = Histogram()

    def add(self, other: Series) -> None:
        """Count ``other`` in this one too (the caller holds ``other.lock``)."""
        for c in COUNTERS:
            self.counts[c] += other.counts[c]
        self.faults += other.faults
        self.queue_wait.add(other.queue_wait)
        self.run_time.add(other.run_time)

    def copy(self) -> Series:
        with self.lock:
            s = Series()
            s.add(self)
        return s

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {**self.counts, "faults": self.faults, "queue_wait_ms": self.queue_wait.snapshot(),
                    "run_ms": self.run_time.snapshot()}


class Metrics:
    """All series of one runtime, created on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, Bundle], Series] = {}

    def series(self, kind: str, entry: str, bundle: Bundle = None) -> Series:
        key = (kind, entry, bundle)
        s = self._series.get(key)
        if s is None:
            with self._lock:
                s = self._series.setdefault(key, Series())
        return s

    def count(self, kind: str, entry: str, counter: str, n: int = 1, bundle: Bundle = None) -> None:
        s = self.series(kind, entry, bundle)
        with s.lock:
            s.counts[counter] += n

    def settle(self, kind: str, entry: str, counter: str, wait_s: float | None, run_s: float | None,
               bundle: Bundle = None, fault: bool = False) -> None:
        """One task ended as ``counter`` (``fault``: by the entry's fault); record its queue wait
        and run time when known."""
        s = self.series(kind, entry, bundle)
        with s.lock:
            s.counts[counter] += 1
            s.faults += fault
            if wait_s is not None:
                s.queue_wait.record(wait_s)
            if run_s is not None:
                s.run_time.record(run_s)

    def version_counts(self, name: str, version: str, kind: str) -> dict[str, int]:
        """The counters (and ``faults``) of bundle ``name`` ``version``'s tasks of ``kind``, all entries."""
        with self._lock:
            mine = [s for (k, _, b), s in self._series.items() if k == kind and b == (name, version)]
        total = dict.fromkeys((*COUNTERS, "faults"), 0)
        for s in mine:
            with s.lock:
                for c in COUNTERS:
                    total[c] += s.counts[c]
                total["faults"] += s.faults
        return total

    def snapshot(self) -> dict[str, Any]:
        """``{"tasks": {kind: {entry: {...}}}`` (versions merged), ``"versions": {bundle: {version:
        {"tasks": {kind: {entry: {...}}}, "totals": {...}}}}`` and ``"totals": {counter: n}}``."""
        with self._lock:
            items = sorted(self._series.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or ("", "")))
        merged: dict[tuple[str, str], Series] = {}
        versions: dict[str, dict[str, Any]] = {}
        totals = dict.fromkeys(COUNTERS, 0)
        for (kind, entry, bundle), s in items:
            copy = s.copy()
            into = merged.get((kind, entry))
            if into is None:
                merged[(kind, entry)] = copy
            else:
                into.add(copy)
            if bundle is not None:
                v = versions.setdefault(bundle[0], {}).setdefault(
                    bundle[1], {"tasks": {}, "totals": dict.fromkeys((*COUNTERS, "faults"), 0)})
                snap = copy.snapshot()
                v["tasks"].setdefault(kind, {})[entry] = snap
                for c in (*COUNTERS, "faults"):
                    v["totals"][c] += snap[c]
        tasks: dict[str, dict[str, Any]] = {}
        for (kind, entry), s in merged.items():
            snap = s.snapshot()
            tasks.setdefault(kind, {})[entry] = snap
            for c in COUNTERS:
                totals[c] += snap[c]
        return {"tasks": tasks, "versions": versions, "totals": totals}
