"""The real-time layer: the most recent events of one table, in memory, as numpy columns.

A ring holds the last ``capacity`` events appended to its table, in order. ``floor`` is the
largest ``ts`` of an event the ring does not hold (evicted, or on disk before the store opened):
every event with ``ts > floor`` is in the ring, so a query whose window starts after ``floor`` is
answered from memory, with the same result a disk read would give.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vm.bundle.tables import TableSpec

DTYPES = {"int": np.dtype(np.int64), "float": np.dtype(np.float64), "bool": np.dtype(np.bool_),
          "str": np.dtype("<U1")}


class Ring:
    """A fixed-capacity circular buffer of one table's events (thread-safe)."""

    def __init__(self, spec: TableSpec, capacity: int, floor: int) -> None:
        self.capacity = capacity
        self.floor = floor
        self._n = 0  # events ever appended
        self._lock = threading.Lock()
        self._cols: dict[str, np.ndarray] = {"ts": np.zeros(capacity, np.int64)}
        for name, ftype in spec.fields:
            self._cols[name] = np.zeros(capacity, DTYPES[ftype])

    def append(self, ts: int, values: Mapping[str, Any]) -> None:
        """Add one validated event; the oldest is evicted when full."""
        with self._lock:
            i = self._n % self.capacity
            cols = self._cols
            if self._n >= self.capacity:
                self.floor = max(self.floor, int(cols["ts"][i]))
            cols["ts"][i] = ts
            for name, value in values.items():
                col = cols[name]
                if col.dtype.kind == "U" and len(value) > col.dtype.itemsize // 4:
                    col = cols[name] = col.astype(f"<U{len(value)}")
                col[i] = value
            self._n += 1

    def covers(self, since_ms: int) -> bool:
        """Whether every event with ``ts >= since_ms`` is in the ring."""
        return since_ms > self.floor and self.capacity > 0

    def select(self, since_ms: int, until_ms: int | None, where: Mapping[str, Sequence[Any]],
               fields: Sequence[str], limit: int) -> dict[str, np.ndarray]:
        """The events with ``since_ms <= ts < until_ms`` matching ``where`` (field: allowed values),
        oldest first (by ts, then arrival), at most the latest ``limit``; the columns ``fields``
        (fresh arrays)."""
        with self._lock:
            n = min(self._n, self.capacity)
            cols = self._cols
            ts = cols["ts"][:n]
            mask = ts >= since_ms
            if until_ms is not None:
                mask &= ts < until_ms
            for name, allowed in where.items():
                col = cols[name][:n]
                mask &= (col == allowed[0]) if len(allowed) == 1 else np.isin(col, list(allowed))
            picked = np.flatnonzero(mask)
            if self._n > self.capacity:  # arrival order: the slots after the next write position come first
                start = self._n % self.capacity
                picked = np.concatenate((picked[picked >= start], picked[picked < start]))
            t = ts[picked]
            if t.size > 1 and (t[1:] < t[:-1]).any():
                picked = picked[np.argsort(t, kind="stable")]
            if picked.size > limit:
                picked = picked[picked.size - limit:]
            return {name: _shrink(cols[name][picked]) for name in fields}


def _shrink(col: np.ndarray) -> np.ndarray:
    """A str column as narrow as its values (what a disk read returns)."""
    if col.dtype.kind != "U":
        return col
    width = int(np.char.str_len(col).max()) if col.size else 1
    return col.astype(f"<U{max(width, 1)}")
