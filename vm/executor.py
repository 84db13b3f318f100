"""Worker threads that run script calls under deadlines and replace themselves when stuck.

The caller never waits past a call's deadline: it gets ``Timeout`` at the deadline whatever the
worker is doing. A worker stuck in one long C-level call (``sum(range(10**12))``) is retired
and a fresh one takes its place, so the pool keeps its capacity; the retired thread exits on
its own if its call ever returns. ``max_stuck`` bounds how many such threads may linger.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from vm import _guard
from vm.errors import Busy, Closed, EdgeError, ResourceExhausted, Timeout
from vm.watchdog import CallContext, ScriptTimeout, Watchdog


class Job:
    """One call handed to the pool; the caller waits on it."""

    __slots__ = ("fn", "args", "deadline", "label", "memory_limit", "_done", "_result", "_error", "_lock")

    def __init__(self, fn: Callable[..., Any], args: tuple, deadline: float, label: str,
                 memory_limit: int | None) -> None:
        self.fn = fn
        self.args = args
        self.deadline = deadline
        self.label = label
        self.memory_limit = memory_limit
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def _settle(self, result: Any = None, error: BaseException | None = None) -> bool:
        with self._lock:
            if self._done.is_set():
                return False
            self._result, self._error = result, error
            self._done.set()
            return True

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self) -> Any:
        """Block until the job settles or its deadline passes (then raise ``Timeout``)."""
        remaining = self.deadline - time.monotonic()
        if not self._done.wait(max(remaining, 0.0) + 0.001):
            self._settle(error=Timeout(f"{self.label} did not finish before its deadline"))
        if self._error is not None:
            raise self._error
        return self._result


class WorkerPool:
    """A fixed number of healthy worker threads fed from one queue."""

    def __init__(self, size: int, *, grace_s: float = 0.05, max_stuck: int = 4,
                 queue_size: int = 1024, name: str = "edgevm-worker") -> None:
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.size = size
        self.max_stuck = max_stuck
        self.name = name
        self.stuck_total = 0
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._lingering: set[_Worker] = set()
        self._closed = False
        self._ids = itertools.count(1)
        self.watchdog = Watchdog(grace_s=grace_s, on_stuck=self._on_stuck)
        for _ in range(size):
            self._spawn()

    def submit(self, fn: Callable[..., Any], *args: Any, deadline: float, label: str = "call",
               memory_limit: int | None = None) -> Job:
        """Queue ``fn(*args)``; it must finish before ``deadline`` (``time.monotonic()``)."""
        if self._closed:
            raise Closed("the runtime is closed")
        if not self._workers:
            raise Busy(f"no healthy worker: {len(self._lingering)} are stuck in long native calls")
        job = Job(fn, args, deadline, label, memory_limit)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy("the call queue is full") from None
        return job

    def call(self, fn: Callable[..., Any], *args: Any, deadline: float, label: str = "call",
             memory_limit: int | None = None) -> Any:
        """Run ``fn(*args)`` on a worker and wait for it, at most until ``deadline``."""
        return self.submit(fn, *args, deadline=deadline, label=label, memory_limit=memory_limit).wait()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"workers": len(self._workers), "stuck_now": len(self._lingering),
                    "stuck_total": self.stuck_total, "queued": self._queue.qsize()}

    def close(self, timeout: float = 1.0) -> None:
        """Stop accepting work; queued jobs fail with ``Closed``; running ones may finish."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers.values())
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job._settle(error=Closed("the runtime was closed before the call ran"))
        for _ in workers:
            self._queue.put(None)
        end = time.monotonic() + timeout
        for w in workers:
            w.thread.join(max(0.0, end - time.monotonic()))
        self.watchdog.close()

    # -- internals ------------------------------------------------------------------------

    def _spawn(self) -> None:
        w = _Worker(self, next(self._ids))
        self._workers[w.ident] = w
        w.thread.start()

    def _on_stuck(self, ctx: CallContext) -> None:
        with self._lock:
            for w in self._workers.values():
                if w.ctx_thread == ctx.thread_id:
                    break
            else:
                return
            del self._workers[w.ident]
            w.retired = True
            self._lingering.add(w)
            self.stuck_total += 1
            if not self._closed and len(self._lingering) <= self.max_stuck:
                self._spawn()

    def _lingering_exit(self, w: _Worker) -> None:
        with self._lock:
            self._lingering.discard(w)
            if not self._closed and len(self._workers) < self.size:
                self._spawn()


class _Worker:
    def __init__(self, pool: WorkerPool, ident: int) -> None:
        self.pool = pool
        self.ident = ident
        self.retired = False
        self.ctx_thread = -1
        self.thread = threading.Thread(target=self._loop, name=f"{pool.name}-{ident}", daemon=True)

    def _loop(self) -> None:
        pool = self.pool
        self.ctx_thread = threading.get_ident()
        while not self.retired:
            job = pool._queue.get()
            if job is None:
                return
            if job.done():
                continue
            if time.monotonic() >= job.deadline:
                job._settle(error=Timeout(f"{job.label} waited in the queue past its deadline"))
                continue
            self._run(job)
        pool._lingering_exit(self)

    def _run(self, job: Job) -> None:
        limited = job.memory_limit is not None
        try:
            if limited:
                _guard.budget_begin(job.memory_limit)
            try:
                result = self.pool.watchdog.run(job.deadline, job.fn, *job.args)
            finally:
                exceeded = _guard.budget_end()[1] if limited else False
            if exceeded:
                raise ResourceExhausted(f"{job.label} exceeded its memory budget of {job.memory_limit} bytes")
            job._settle(result=result)
        except ScriptTimeout:
            job._settle(error=Timeout(f"{job.label} did not finish before its deadline"))
        except MemoryError:
            job._settle(error=ResourceExhausted(f"{job.label} ran out of memory"))
        except EdgeError as exc:
            job._settle(error=exc)
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the caller as a value
            job._settle(error=exc)
