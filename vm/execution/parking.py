"""Condition variables and events whose waiters sleep at once instead of spinning first.

Why: on free-threaded CPython (3.13t, 3.14t) a blocking ``threading.Lock.acquire`` spins before it
sleeps, calling ``sched_yield()`` up to 40 times (``MAX_SPIN_COUNT`` in CPython's Python/lock.c).
``threading.Condition`` and ``threading.Event`` wait by blocking on such a lock, so a caller waiting
milliseconds for its inference, or an idle worker waiting for a task, gives its core away 40 times;
on a busy machine every yield lets another process run for a whole time slice (measured with
bench/parallel.py on 3.14t: the caller spent 80 % of its wait runnable instead of asleep, and one
caller's throughput fell to a third). ``queue.SimpleQueue.get`` parks the thread directly (no
spinning; on GIL builds it blocks on a lock as before), so each waiter here waits on its own
``SimpleQueue`` and a notify puts one item into it.
"""
from __future__ import annotations

import queue
import threading


class Condition(threading.Condition):
    """``threading.Condition`` (same lock, same ``wait``/``wait_for``/``notify`` semantics) whose
    ``wait`` parks on a per-waiter ``SimpleQueue`` instead of blocking on a spinning lock."""

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, sleep until notified or ``timeout`` seconds passed, take the lock back;
        True if notified."""
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._waiters.append(waiter)  # type: ignore[attr-defined]
        saved = self._release_save()  # type: ignore[attr-defined]
        woken = False
        try:
            waiter.get(timeout=None if timeout is None else max(timeout, 0.0))
            woken = True
        except queue.Empty:
            pass
        finally:
            self._acquire_restore(saved)  # type: ignore[attr-defined]
            if not woken:
                try:
                    self._waiters.remove(waiter)  # type: ignore[attr-defined]
                except ValueError:  # notified between the timeout and taking the lock back
                    woken = True
        return woken

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting threads (the lock must be held)."""
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters  # type: ignore[attr-defined]
        while waiters and n > 0:
            waiters.popleft().put(None)
            n -= 1


class Event:
    """``threading.Event`` over ``Condition`` above: ``set``, ``is_set``, ``wait(timeout)``."""

    __slots__ = ("_cond", "_flag")

    def __init__(self) -> None:
        self._cond = Condition(threading.Lock())
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until the flag is set or ``timeout`` seconds passed; the flag."""
        with self._cond:
            return self._cond.wait_for(self.is_set, timeout)

