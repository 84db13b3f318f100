"""The deadline timer: settles tasks and chains whose deadline passed, so that a caller is answered
at its deadline whatever the worker running its task is doing."""
from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from vm.execution import parking
from vm.execution.tasks import SETTLED, Chain, Task

log = logging.getLogger("edgevm.scheduler")


class DeadlineTimer:
    """One thread that settles tasks and chains whose deadline passed (it never runs user code).

    Items sit in 1 ms buckets and leave theirs when they settle, so the timer holds only live items
    (memory stays bounded by the queues) and has nothing to clean up; a bucket fires at its end,
    at most ``tick_s`` after the deadlines in it."""

    def __init__(self, fire: Callable[[Any], None], tick_s: float = 0.001) -> None:
        self._fire = fire
        self._tick = tick_s
        self._buckets: dict[int, dict[int, Any]] = {}
        self._keys: list[int] = []  # heap of bucket keys (keys of emptied buckets linger until due)
        self._cv = parking.Condition(threading.Lock())
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="edgevm-deadlines", daemon=True)
        self._thread.start()

    def add(self, when: float, item: Task | Chain) -> None:
        key = int(when / self._tick)
        with self._cv:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = {}
                keys = self._keys
                heapq.heappush(keys, key)
                if keys[0] == key:
                    self._cv.notify()
                if len(keys) > 2 * len(self._buckets) + 1024:
                    self._keys = keys = [k for k in keys if k in self._buckets]
                    heapq.heapify(keys)
            bucket[item.id] = item
            item.tkey = key

    def remove(self, item: Task | Chain) -> None:
        key = item.tkey
        if key is None:
            return
        item.tkey = None
        with self._cv:
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.pop(item.id, None)
                if not bucket:
                    del self._buckets[key]

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(1.0)

    def _loop(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while not self._closed:
                    keys = self._keys
                    while keys and keys[0] not in self._buckets:
                        heapq.heappop(keys)
                    if not keys:
                        cv.wait()
                        continue
                    wait = (keys[0] + 1) * self._tick - time.monotonic()
                    if wait <= 0:
                        break
                    cv.wait(wait)
                if self._closed:
                    return
                due = list(self._buckets.pop(heapq.heappop(self._keys)).values())
            for item in due:
                item.tkey = None
                if item.state != SETTLED:
                    try:
                        self._fire(item)
                    except Exception:  # pragma: no cover - the timer must survive a bug
                        log.exception("deadline handling failed")
