"""The task scheduler: three bounded priority queues with their own workers, task chains (DAGs),
deadlines that answer the caller on time, circuit breakers and metrics.

Queues and workers
    ``core`` (0), ``normal`` (1) and ``low`` (2) each have a bounded queue and their own worker
    threads. A worker of level L serves levels 0..L, highest first: core workers run only core
    tasks; normal and low workers help with higher-priority tasks that no worker of their own level
    was woken for.

Priority under the GIL
    Queue order is not enough on CPython: a low task holding the GIL delays a core task by up to the
    interpreter's switch interval (5 ms). So (1) a task of priority p does not start while a task of
    higher priority is queued or running, nor for ``linger_s`` after a synchronous one finished (its
    caller must get the GIL to return); the worker *yields* (waits, GIL released) instead; and
    (2) a normal or low worker about to start another task back to back first releases the GIL for a
    moment (``time.sleep(0)``) once it has held it ``gil_slice_s`` (0: after every task; None:
    never), so a host thread entering the runtime is not kept out for the switch interval.
    Starvation bound: a task at the head of its queue starts after its worker has yielded at most
    ``starvation_yields`` times, a yield being one higher-priority task it ran (each bounded by its
    deadline) or one pause of at most ``yield_s``.

Admission
    A queue holds at most ``queue_size`` accepted, not yet started tasks (chain steps waiting for
    their dependencies count from acceptance: their slot is reserved). A submission that does not fit
    is refused with ``Busy``; a chain is accepted or refused as a whole; an accepted task is never
    dropped: it ends exactly once, with a result or a typed error, and its callback runs once.

Deadlines
    Every task has a deadline: its budget counted from the moment it becomes ready, capped by an
    absolute deadline and by its chain's deadline. The watchdog (``vm.execution.watchdog``) stops the script at
    the deadline; independently, the deadline thread settles the task with ``Timeout`` at that
    moment, so a callback never waits for a worker stuck in a long native call. A worker still stuck
    ``grace_s`` after the deadline is retired and replaced (at most ``max_stuck`` linger).
    A step that fails or times out stops its chain: the steps that have not started end with the
    same error class ("chain stopped").

Callbacks (``Task.on_done``) run exactly once, on the worker thread that ran the task, or on the
``edgevm-callbacks`` thread when the task ended without its worker (deadline, shutdown, a stopped
chain). They must be quick; an exception in one is logged and ignored.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from vm.errors import BadInput, Busy, CircuitOpen, Closed, EdgeError, NotFound, Timeout
from vm.execution import parking
from vm.execution.breaker import Breakers
from vm.execution.deadlines import DeadlineTimer
from vm.execution.executor import execute
from vm.execution.metrics import Metrics
from vm.execution.tasks import (
    CORE,
    LOW,
    QUEUE_NAMES,
    QUEUED,
    RUNNING,
    SETTLED,
    WAITING,
    Chain,
    Task,
    check_dag,
)
from vm.execution.watchdog import Watchdog
from vm.guard.context import CallContext

log = logging.getLogger("edgevm.scheduler")

_INF = float("inf")
# Errors that say nothing about the entry's health: they never move a circuit breaker.
NOT_THE_ENTRYS_FAULT = (BadInput, NotFound, Busy, Closed, CircuitOpen)


class _Worker:
    __slots__ = ("sched", "level", "ident", "thread", "tid", "task", "retired", "yields", "rested")

    def __init__(self, sched: Scheduler, level: int, ident: int) -> None:
        self.sched, self.level, self.ident = sched, level, ident
        self.task: Task | None = None
        self.retired = False
        self.yields = 0
        self.rested = False
        self.tid = -1
        self.thread = threading.Thread(target=self._loop, name=f"edgevm-{QUEUE_NAMES[level]}-{ident}",
                                       daemon=True)

    def _loop(self) -> None:
        self.tid = threading.get_ident()
        sched = self.sched
        queues = sched._queues[:self.level + 1]
        slice_s = sched.gil_slice_s
        nap = self.level > CORE and slice_s is not None
        since = time.monotonic()
        while True:
            task = sched._take(self)
            if task is None:
                break
            if self.rested:  # _take waited: the GIL was free meanwhile
                self.rested = False
                since = time.monotonic()
            sched._run(self, task)
            if nap and any(queues) and time.monotonic() - since >= slice_s:  # type: ignore[operator]
                # About to start another task back to back: release the GIL for a moment so that a
                # thread waiting for it (a host thread entering a core call) gets it now, not after
                # the interpreter's 5 ms switch interval.
                time.sleep(0)
                since = time.monotonic()
        if self.retired:
            sched._lingering_exit(self)


class Scheduler:
    """Queues, workers, deadlines, breakers and metrics of one runtime (thread-safe)."""

    def __init__(self, *, workers: Sequence[int] = (2, 1, 1), queue_size: int | Sequence[int] = 1024,
                 grace_s: float = 0.05, max_stuck: int = 4, breakers: Breakers | None = None,
                 metrics: Metrics | None = None, starvation_yields: int = 8, yield_s: float = 0.005,
                 yield_to_higher: bool = True, linger_s: float = 0.0002, gil_slice_s: float | None = 0.0) -> None:
        if len(workers) != 3 or any(n < 1 for n in workers):
            raise BadInput("each of the three queues needs at least one worker")
        sizes = [queue_size] * 3 if isinstance(queue_size, int) else list(queue_size)
        if len(sizes) != 3 or any(n < 1 for n in sizes):
            raise BadInput("queue sizes must be >= 1")
        self.sizes = list(workers)
        self.capacity = tuple(sizes)
        self.max_stuck = max_stuck
        self.starvation_yields = starvation_yields
        self.yield_s = yield_s
        self.yield_to_higher = yield_to_higher
        self.linger_s = linger_s
        self.gil_slice_s = gil_slice_s
        self.breakers = breakers or Breakers()
        self.metrics = metrics or Metrics()
        self.stuck_total = 0
        self._lock = threading.Lock()
        self._conds = [parking.Condition(self._lock) for _ in range(3)]
        self._gates = [parking.Condition(self._lock) for _ in range(3)]
        self._ready_cv = parking.Condition(self._lock)
        self._queues: list[deque[Task]] = [deque(), deque(), deque()]
        self._held = [0, 0, 0]      # accepted, not started (queued or waiting for dependencies)
        self._running = [0, 0, 0]
        self._idle = [0, 0, 0]
        self._woken = [0, 0, 0]     # idle workers notified for a new task, not awake yet
        self._gated = [0, 0, 0]
        self._quiet_until = [0.0, 0.0, 0.0]
        self._live: dict[int, Task] = {}
        self._ids = itertools.count(1)
        self._worker_ids = itertools.count(1)
        self._workers: list[dict[int, _Worker]] = [{}, {}, {}]
        self._lingering: set[_Worker] = set()
        self._closed = False
        self._ready = False
        self._delivery: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._deliverer = threading.Thread(target=self._deliver_loop, name="edgevm-callbacks", daemon=True)
        self._deliverer.start()
        self._timer = DeadlineTimer(self._expire)
        self.watchdog = Watchdog(grace_s=grace_s, on_stuck=self._on_stuck)
        with self._lock:
            for level, n in enumerate(self.sizes):
                for _ in range(n):
                    self._spawn(level)
            # Ready means every worker waits for work (a task is then handed to its own level).
            self._ready_cv.wait_for(lambda: self._idle == list(self.sizes), 5.0)
            self._ready = True

    # -- submitting --------------------------------------------------------------------------

    def submit(self, tasks: Task | Sequence[Task], *, chain_deadline: float | None = None) -> list[int]:
        """Accept ``tasks`` (one, or a DAG whose ``deps`` are all in the list) or refuse them all
        with ``Busy``/``CircuitOpen``/``Closed``. ``chain_deadline`` (``time.monotonic()``) bounds the
        whole chain. Returns the task ids in the given order."""
        batch = [tasks] if isinstance(tasks, Task) else list(tasks)
        if not batch:
            return []
        if len(batch) > 1 or batch[0].deps:
            check_dag(batch)
        need = [0, 0, 0]
        for t in batch:
            need[t.priority] += 1
        try:
            for t in batch:
                if t.breaker is not None:
                    t.permit = t.breaker.acquire()
        except CircuitOpen:
            self._refused(batch)
            raise
        now = time.monotonic()
        error: EdgeError | None = None
        with self._lock:
            if self._closed:
                error = Closed("the runtime is closed")
            else:
                for p in range(3):
                    if need[p] and self._held[p] + need[p] > self.capacity[p]:
                        error = Busy(f"the {QUEUE_NAMES[p]} queue is full ({self.capacity[p]} tasks waiting)")
                        break
                    if need[p] and not any(self._workers[lvl] for lvl in range(p, 3)):
                        error = Busy(f"no healthy worker for the {QUEUE_NAMES[p]} queue: "
                                     f"{len(self._lingering)} are stuck in long native calls")
                        break
            if error is None:
                for p in range(3):
                    self._held[p] += need[p]
                chain = None
                if len(batch) > 1 or chain_deadline is not None:
                    chain = Chain(next(self._ids), batch, chain_deadline if chain_deadline is not None else _INF)
                for t in batch:
                    t.id = next(self._ids)
                    t.chain = chain
                    t.pending = len(t.deps)
                    for d in t.deps:
                        d.dependents.append(t)
                    self._live[t.id] = t
                for t in batch:
                    if not t.pending:
                        self._enqueue(t, now)
                if chain is not None and chain.deadline < _INF:
                    self._timer.add(chain.deadline, chain)
        if error is not None:
            self._refused(batch)
            raise error
        for t in batch:
            self.metrics.count(t.kind, t.entry, "submitted", bundle=t.bundle)
        return [t.id for t in batch]

    def call(self, task: Task) -> Any:
        """Submit one task and wait for it; raise its error. The caller gets ``Timeout`` at the
        deadline whatever the worker is doing."""
        event = task._event = parking.Event()
        task.timed = False  # this thread keeps the deadline itself
        self.submit(task)
        if not event.wait(max(task.deadline - time.monotonic(), 0.0) + 0.001):
            if not self._finish(task, None, _late(task), True):
                event.wait()  # settled by another thread an instant ago
        if task.error is not None:
            raise task.error
        return task.result

    def _refused(self, batch: list[Task]) -> None:
        for t in batch:
            if t.permit and t.breaker is not None:
                t.breaker.release(t.permit)
                t.permit = 0
            self.metrics.count(t.kind, t.entry, "refused", bundle=t.bundle)

    def _enqueue(self, t: Task, now: float) -> None:
        """Make ``t`` ready (lock held)."""
        t.ready_at = now
        deadline = now + t.budget_s if t.budget_s is not None else _INF
        if t.hard_deadline is not None and t.hard_deadline < deadline:
            deadline = t.hard_deadline
        if t.chain is not None and t.chain.deadline < deadline:
            deadline = t.chain.deadline
        t.deadline = deadline
        t.state = QUEUED
        p = t.priority
        self._queues[p].append(t)
        if self._idle[p] > self._woken[p]:
            self._woken[p] += 1
            self._conds[p].notify()
        else:  # a worker of a lower level helps
            for lvl in range(p + 1, 3):
                if self._idle[lvl] > self._woken[lvl]:
                    self._woken[lvl] += 1
                    self._conds[lvl].notify()
                    break
                if self._gated[lvl]:
                    self._gates[lvl].notify()
                    break
        if t.timed:
            self._timer.add(deadline, t)

    # -- workers -----------------------------------------------------------------------------

    def _spawn(self, level: int) -> None:
        w = _Worker(self, level, next(self._worker_ids))
        self._workers[level][w.ident] = w
        w.thread.start()

    def has_live(self, pred: Callable[[Task], bool]) -> bool:
        """Whether an accepted task that has not ended yet satisfies ``pred``."""
        with self._lock:
            return any(pred(t) for t in self._live.values())

    def ensure_workers(self, level: int, n: int) -> None:
        """At least ``n`` worker threads on queue ``level`` from now on (process mode: a thread waits
        for each call in flight in a worker process, so the pools' sizes add up)."""
        with self._lock:
            if n > self.sizes[level] and not self._closed:
                for _ in range(n - self.sizes[level]):
                    self._spawn(level)
                self.sizes[level] = n

    def _pop(self, p: int) -> Task | None:
        q = self._queues[p]
        while q:
            t = q.popleft()
            if t.state == QUEUED and not t.cancelled:
                return t
        return None

    def _take(self, w: _Worker) -> Task | None:
        """The next task for ``w``: the highest priority first; a task of priority p waits while
        tasks of priority < p run (bounded by the starvation rule); None once closed or retired."""
        level = w.level
        own = self._queues[level]
        limit = self.starvation_yields
        blocked = False
        with self._lock:
            while True:
                if self._closed or w.retired:
                    return None
                t = None
                pause = 0.0
                if own and w.yields >= limit:
                    t = self._pop(level)
                if t is None:
                    for p in range(level + 1):
                        q = self._queues[p]
                        # help with another level's tasks only when none of its workers was woken for them
                        if not q or p < level and len(q) <= self._woken[p]:
                            continue
                        if p and self.yield_to_higher and (p < level or w.yields < limit):
                            pause = self._yield_pause(p)
                            if pause > 0:
                                break  # tasks of lower priority wait as well
                        t = self._pop(p)
                        if t is not None:
                            break
                if t is not None:
                    if t.priority == level:
                        w.yields = 0
                    elif own:
                        w.yields += 1
                    w.rested = w.rested or blocked
                    t.state = RUNNING
                    self._held[t.priority] -= 1
                    self._running[t.priority] += 1
                    w.task = t
                    return t
                if pause > 0:
                    self._gated[level] += 1
                    self._gates[level].wait(pause)
                    self._gated[level] -= 1
                    blocked = True
                    if own:
                        w.yields += 1
                    continue
                w.yields = 0
                self._idle[level] += 1
                if not self._ready:
                    self._ready_cv.notify()  # __init__ waits for every worker to be idle
                self._conds[level].wait()
                blocked = True
                self._idle[level] -= 1
                if self._woken[level]:
                    self._woken[level] -= 1

    def _run(self, w: _Worker, t: Task) -> None:
        t.started = now = time.monotonic()
        error: EdgeError | None = None
        result = None
        if t.state == SETTLED:
            pass
        elif now >= t.deadline:
            error = Timeout(f"{t.label} waited in the queue past its deadline")
        elif t.breaker is not None and not t.breaker.allows(t.permit):
            error = CircuitOpen(f"{t.breaker.name} opened while the task was queued")
        else:
            t.ran = True
            result, error = execute(self.watchdog, t.deadline, t.fn, t.args, memory_limit=t.memory_limit,
                                    guarded=t.guarded,
                                    label=t.label)
        self._finish(t, result, error, True)
        with self._lock:
            if w.task is t:  # not retired meanwhile
                w.task = None
                self._release_running(t.priority, t._event is not None)

    def _yield_pause(self, prio: int) -> float:
        """How long tasks of priority ``prio`` should be held back (lock held): while a task of
        higher priority waits or runs, and for ``linger_s`` after one ended (its caller is waking up)."""
        now = time.monotonic()
        quiet = 0.0
        for p in range(prio):
            if self._running[p] or self._queues[p]:
                return self.yield_s
            if self._quiet_until[p] > quiet:
                quiet = self._quiet_until[p]
        return min(quiet - now, self.yield_s)

    def _release_running(self, p: int, waiter: bool = False) -> None:
        """One task of priority ``p`` stopped running (lock held): wake workers that yielded to it
        (after ``linger_s`` when a thread waits for its result and must get the GIL first)."""
        self._running[p] -= 1
        if waiter and p < LOW:
            self._quiet_until[p] = time.monotonic() + self.linger_s
        if not self._running[p]:
            for lvl in range(p + 1, 3):
                if self._gated[lvl]:
                    self._gates[lvl].notify_all()

    def _on_stuck(self, ctx: CallContext) -> None:
        """Watchdog: a call is still running ``grace_s`` after its deadline. Retire its worker."""
        with self._lock:
            for level in range(3):
                for w in self._workers[level].values():
                    if w.tid == ctx.thread_id:
                        break
                else:
                    continue
                break
            else:
                return
            del self._workers[level][w.ident]
            w.retired = True
            self._lingering.add(w)
            self.stuck_total += 1
            task, w.task = w.task, None
            if task is not None:
                self._release_running(task.priority)
            replace = not self._closed and len(self._lingering) <= self.max_stuck
            if replace:
                self._spawn(level)
        log.warning("worker %s stuck past the deadline of %s; retired%s", w.thread.name,
                    task.label if task else "a call", " and replaced" if replace else
                    f" ({len(self._lingering)} stuck, cap {self.max_stuck}: not replaced)")
        if task is not None:
            self._finish(task, None, _late(task), False)

    def _lingering_exit(self, w: _Worker) -> None:
        with self._lock:
            self._lingering.discard(w)
            if not self._closed and len(self._workers[w.level]) < self.sizes[w.level]:
                self._spawn(w.level)

    # -- ending tasks ------------------------------------------------------------------------

    def _finish(self, t: Task, result: Any, error: EdgeError | None, inline: bool) -> bool:
        """Settle ``t`` exactly once: chain bookkeeping, metrics, breaker, then its callback."""
        if not t._once.acquire(False):
            return False
        now = time.monotonic()
        t.finished = now
        t.result, t.error = result, error
        stopped: list[Task] = []
        with self._lock:
            if t.state in (WAITING, QUEUED):
                self._held[t.priority] -= 1
            t.state = SETTLED
            self._live.pop(t.id, None)
            ch = t.chain
            if ch is not None:
                ch.left -= 1
                if error is None:
                    if not ch.stopped:
                        for d in t.dependents:
                            d.pending -= 1
                            if not d.pending and d.state == WAITING:
                                self._enqueue(d, now)
                elif not ch.stopped:
                    ch.stopped = True
                    stopped = [x for x in ch.tasks if x.state in (WAITING, QUEUED)]
                    for x in stopped:
                        x.cancelled = True  # no worker may start it now
                if not ch.left:
                    ch.state = SETTLED
                    if ch.tkey is not None:
                        self._timer.remove(ch)
        if t.tkey is not None:
            self._timer.remove(t)
        if error is None:
            counter = "done"
        elif t.cancelled or not t.ran and isinstance(error, (Closed, CircuitOpen)):
            counter = "cancelled"
        elif isinstance(error, Timeout):
            counter = "timed_out"
        else:
            counter = "failed"
        wait = (t.started or now) - t.ready_at if t.ready_at else None
        fault = error is not None and not isinstance(error, NOT_THE_ENTRYS_FAULT)
        self.metrics.settle(t.kind, t.entry, counter, wait, now - t.started if t.ran else None, t.bundle, fault)
        if t.permit and t.breaker is not None:
            if t.ran:
                ok = error is None or isinstance(error, NOT_THE_ENTRYS_FAULT)
                t.breaker.record(t.permit, ok, "" if ok else f"{error.name}: {error}")  # type: ignore[union-attr]
            else:
                t.breaker.release(t.permit)
        if t._event is not None:
            t._event.set()
        if t.on_done is not None:
            if inline:
                self._callback(t)
            else:
                self._delivery.put(t)
        cls = type(error) if error is not None and not isinstance(error, CircuitOpen) else Closed
        for x in stopped:
            what = "timed out" if isinstance(error, Timeout) else f"failed ({error})"
            self._finish(x, None, cls(f"chain stopped: step {t.label} {what}"), False)
        return True

    def _expire(self, item: Task | Chain) -> None:
        """The deadline thread: ``item``'s deadline passed."""
        if isinstance(item, Task):
            self._finish(item, None, _late(item), False)
            return
        for t in item.tasks:
            if t.state != SETTLED:
                self._finish(t, None, Timeout(f"{t.label}: its chain's deadline passed"), False)

    @staticmethod
    def _callback(t: Task) -> None:
        try:
            t.on_done(t)  # type: ignore[misc]
        except Exception:
            log.exception("callback of task %d (%s) raised", t.id, t.label)

    def _deliver_loop(self) -> None:
        while True:
            t = self._delivery.get()
            if t is None:
                return
            self._callback(t)

    # -- state and shutdown ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Workers, queue depths and stuck-worker counts."""
        with self._lock:
            queues = {name: {"waiting": self._held[p], "capacity": self.capacity[p],
                             "running": self._running[p], "workers": len(self._workers[p])}
                      for p, name in enumerate(QUEUE_NAMES)}
            return {"workers": sum(len(w) for w in self._workers), "stuck_now": len(self._lingering),
                    "stuck_total": self.stuck_total, "queued": sum(self._held), "in_flight": len(self._live),
                    "queues": queues}

    def snapshot(self) -> dict[str, Any]:
        """Metrics, breakers and queue state as plain data."""
        return {**self.metrics.snapshot(), **self.breakers.snapshot(), **self.stats()}

    def close(self, timeout: float = 1.0) -> None:
        """Refuse new tasks; tasks that have not started end with ``Closed``; running tasks get up to
        ``timeout`` seconds to finish, then end with ``Closed`` too. Every callback still runs.
        Idempotent; safe to call from a callback."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = sorted((t for t in self._live.values() if t.state in (WAITING, QUEUED)), key=lambda t: t.id)
            for q in self._queues:
                q.clear()
            for c in (*self._conds, *self._gates):
                c.notify_all()
            workers = [w for level in self._workers for w in level.values()]
        for t in pending:
            self._finish(t, None, Closed(f"the runtime was closed before {t.label} ran"), False)
        end = time.monotonic() + timeout
        me = threading.current_thread()
        while self._live and time.monotonic() < end:
            if any(w.thread is me for w in workers):
                break  # a callback on a worker closes the runtime: do not wait for ourselves
            time.sleep(0.001)
        for t in sorted(self._live.values(), key=lambda t: t.id):
            self._finish(t, None, Closed(f"the runtime was closed while {t.label} ran"), False)
        for w in workers:
            if w.thread is not me:
                w.thread.join(max(0.0, end - time.monotonic()))
        self._timer.close()
        alive = [w.thread for w in workers if w.thread.is_alive() and w.thread is not me]
        if alive:  # the watchdog still has to stop their scripts at their deadlines
            threading.Thread(target=self._reap, args=(alive,), name="edgevm-reaper", daemon=True).start()
        else:
            self.watchdog.close()
        self._delivery.put(None)
        if self._deliverer is not me:
            self._deliverer.join(max(1.0, end - time.monotonic()))

    def _reap(self, threads: list[threading.Thread], limit_s: float = 3600.0) -> None:
        end = time.monotonic() + limit_s
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        self.watchdog.close()


def _late(t: Task) -> Timeout:
    """The error of a task whose deadline passed while it ran (or waited for its worker)."""
    had = f" (it had {t.budget_s * 1000:.0f} ms)" if t.budget_s is not None else ""
    return Timeout(f"{t.label} did not finish before its deadline{had}")
