"""A bundle's worker pool: ``size`` worker processes that serve its calls one at a time each, plus
warm spares that replace a worker the moment it is lost.

A call takes an idle worker, sends it the request with the call's deadline, and reads its reply
as hostile input (``vm.isolation.channel``). The worker stops Python-level overruns itself, at the
deadline (its own watchdog). One that has not answered by the deadline is overdue: a spare takes
its place for the next calls at once, and if it has not answered by the deadline plus ``grace_s``
it is stuck in C code and is killed (if it answers in time, it becomes the spare). A worker that dies (a signal, an exit, a resource limit), or sends anything
but a well-formed reply, is killed and the call fails with ``Crashed``; a spare takes its place and
a maintenance thread starts a new spare. A spare rehearses the bundle's latest request once (in its
own process; the result is discarded), so that its first real call is as fast as a warm worker's,
not slowed by cold caches and copy-on-write faults. Workers that keep failing to start are
restarted with an exponential backoff, never in a tight loop.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vm import wire
from vm.bundle import loader
from vm.bundle import snapshot as snapshot_format
from vm.errors import ALL_ERRORS, Busy, Closed, Crashed, EdgeError, NotFound, Timeout
from vm.isolation.channel import Channel, ChannelClosed, ChannelError, ChannelTimeout
from vm.isolation.supervisor import Supervisor, describe_exit

log = logging.getLogger("edgevm.isolation")

_BY_CODE = {cls.code: cls for cls in ALL_ERRORS if cls is not Crashed}
STARTING, IDLE, BUSY, OVERDUE, SPARE, DEAD = "starting", "idle", "busy", "overdue", "spare", "dead"
MAX_BACKOFF_S = 60.0
EXIT_WAIT_S = 1.0  # how long a call that lost its worker waits to learn how it died


class _Worker:
    __slots__ = ("pid", "chan", "state", "status", "exited", "retire", "rehearsed", "snaps")

    def __init__(self, pid: int, chan: Channel) -> None:
        self.pid = pid
        self.chan = chan
        self.state = STARTING
        self.status: int | None = None
        self.exited = threading.Event()
        self.retire = False
        self.rehearsed = False
        self.snaps: dict[str, str] = {}  # the snapshot versions it holds (name -> version)


EventsHandler = Callable[[Any, Any, float, bool], Any]
"""``events(op, args, deadline, writes)``: the host's answer to a worker's ``edge.events`` call."""
PrefetchHandler = Callable[[str, float], list]
"""``prefetch(business, deadline)``: the reads entry ``business`` declares, run for a request
(``vm.data.store.Access.prefetch``): per read ``[since_ms, complete, max_rows, columns]`` or None."""


class Pool:
    """The worker processes of one loaded bundle (thread-safe); ``events`` serves its scripts'
    ``edge.events`` calls (``vm.data``)."""

    def __init__(self, supervisor: Supervisor, bundle: loader.TrustedBundle, *, size: int, spares: int,
                 settings: dict[str, Any], grace_s: float, max_frame: int,
                 on_log: Callable[[str], None], events: EventsHandler | None = None,
                 prefetch: PrefetchHandler | None = None,
                 features: Callable[[], Mapping[str, snapshot_format.Snapshot]] = dict) -> None:
        self.sup = supervisor
        self._events = events
        self._prefetch = prefetch
        self.name = f"{bundle.name} {bundle.version}"
        self.size, self.spares = size, spares
        self._export = loader.export(bundle)
        self._settings = settings
        self._grace_s = grace_s
        self._max_frame = max_frame
        self._on_log = on_log
        self._features = features
        self._declared = bundle.manifest.snapshots
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._workers: list[_Worker] = []
        self._idle: deque[_Worker] = deque()
        self._spare: list[_Worker] = []
        self._starting = 0
        self._ids = itertools.count(1)
        self._closed = False
        self._retiring = False
        self._waiters = 0
        self._failures = 0        # consecutive workers that failed to start
        self._sample: tuple[str, bytes] | None = None  # the latest request served: spares rehearse it
        self._retry_at = 0.0
        self.counts = {"started": 0, "crashed": 0, "killed": 0, "invalid_replies": 0, "start_failures": 0,
                       "events_frames": 0}
        self._maint = threading.Thread(target=self._maintain, name=f"edgevm-pool-{bundle.name}", daemon=True)

    # -- life cycle -------------------------------------------------------------------------

    def start(self, deadline: float) -> None:
        """Start ``size`` workers and wait until every one has loaded the bundle; then the spares
        start in the background. A load error (the module top level raised, timed out...) is raised
        as the typed error the worker reported, and every worker is stopped."""
        pending = []
        try:
            for _ in range(self.size):
                pending.append(self._launch(deadline))
            for w in pending:
                self._await_ready(w, deadline)
        except BaseException:
            for w in pending:
                self._drop(w, kill=True)
            raise
        with self._cond:
            for w in pending:
                w.state = IDLE
                self._workers.append(w)
                self._idle.append(w)
        self._maint.start()

    def retire(self, still_needed: Callable[[], bool] = lambda: False) -> None:
        """The bundle was replaced or unloaded: stop for good once nothing needs this pool any more.
        Calls in flight, and calls already queued for it (``still_needed()``), are served by its
        workers first, as in thread mode the old version serves what was routed to it; the spares
        exit now."""
        with self._cond:
            if self._closed or self._retiring:
                return
            self._retiring = True
            spares, self._spare = self._spare, []
            for w in spares:
                w.state = DEAD
            self._cond.notify_all()
        for w in spares:
            self._dismiss(w)
        threading.Thread(target=self._drain, args=(still_needed,), name=f"edgevm-drain-{self.name}",
                         daemon=True).start()

    def _drain(self, still_needed: Callable[[], bool]) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                busy = self._waiters or any(w.state == BUSY for w in self._workers)
            if not busy and not still_needed():
                break
            time.sleep(0.02)
        self._shut()

    def _shut(self) -> None:
        """No more calls: idle workers exit now, busy ones after their call."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle = list(self._idle) + self._spare
            self._idle.clear()
            self._spare.clear()
            for w in self._workers:
                w.retire = True
            for w in idle:
                w.state = DEAD
            self._cond.notify_all()
        for w in idle:
            self._dismiss(w)

    def close(self, timeout_s: float) -> None:
        """Stop now: wait up to ``timeout_s`` for calls in flight, then kill what is left."""
        self._shut()
        end = time.monotonic() + timeout_s
        with self._cond:
            while any(w.state == BUSY for w in self._workers) and time.monotonic() < end:
                self._cond.wait(max(end - time.monotonic(), 0.001))
            left = [w for w in self._workers if w.state != DEAD]
        for w in left:
            self.sup.kill(w.pid)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            states = [w.state for w in self._workers]
            return {"workers": len(states), "idle": states.count(IDLE), "busy": states.count(BUSY),
                    "spares": len(self._spare), "starting": self._starting, "pids": [w.pid for w in self._workers],
                    "spare_pids": [w.pid for w in self._spare],
                    **self.counts}

    # -- calls ------------------------------------------------------------------------------

    def call(self, deadline: float, op: str, business: str, payload: bytes,
             features: Sequence[tuple[str, bytes]] = (), *, label: str) -> bytes:
        """Run ``op`` (``invoke``, ``step``, ``warm``) in a worker; its result, or its typed error."""
        declared = self._declared_rows(op, business, deadline)
        w = self._acquire(deadline, label)
        cid = next(self._ids)
        limit = deadline
        try:
            self._sync(w)
            w.chan.send("call", cid, op, business, payload, deadline, [list(f) for f in features], declared)
            while True:
                try:
                    msg = w.chan.recv(limit)
                except ChannelTimeout:
                    if limit > deadline:
                        raise
                    self._overdue(w)
                    limit = deadline + self._grace_s
                    continue
                kind = msg[0]
                if kind == "log" and len(msg) == 2 and isinstance(msg[1], str):
                    self._on_log(msg[1])
                    continue
                if kind == "events" and len(msg) == 3:
                    self.counts["events_frames"] += 1
                    w.chan.send("events", *self._serve_events(msg[1], msg[2], deadline, writes=True))
                    continue
                if kind == "ok" and len(msg) == 3 and msg[1] == cid and isinstance(msg[2], bytes):
                    if op == "invoke":
                        first = self._sample is None
                        self._sample = (business, payload)
                        if first and self._spare:
                            with self._cond:
                                self._cond.notify_all()  # the spares can rehearse now
                    self._release(w)
                    return msg[2]
                if kind == "error" and len(msg) == 5 and msg[1] == cid:
                    error = _error(msg[2], msg[3], msg[4])
                    self._release(w)
                    raise error
                raise ChannelError("the worker sent a frame that is not a reply to this call")
        except ChannelTimeout:
            self.counts["killed"] += 1
            self._lose(w, kill=True)
            raise Timeout(f"{label} did not finish before its deadline; its worker process was killed") from None
        except ChannelError as exc:
            self._lose(w, kill=True)
            if not isinstance(exc, ChannelClosed):
                self.counts["invalid_replies"] += 1
                raise Crashed(f"{label}: the worker process broke the protocol ({exc}) and was killed") from None
            w.exited.wait(EXIT_WAIT_S)
            self.counts["crashed"] += 1
            raise Crashed(f"{label}: the worker process {describe_exit(w.status)} during the call") from None

    def _declared_rows(self, op: str, business: str, deadline: float) -> list:
        """The rows the entry declares (``events.prefetch``), read now and sent with the request."""
        if self._prefetch is None or op not in ("invoke", "step"):
            return []
        return [None if r is None else [*r[:3], wire.pack_columns(r[3])] for r in self._prefetch(business, deadline)]

    def _serve_events(self, op: Any, data: Any, deadline: float, *, writes: bool) -> tuple:
        """Answer a worker's ``edge.events`` frame (hostile input: the handler checks every part)."""
        try:
            if self._events is None:
                raise NotFound("no event store is configured (config 'data')")
            if type(data) is not bytes:
                raise ChannelError("the worker sent edge.events arguments that are not bytes")
            result = self._events(op, wire.decode(data, what="the edge.events arguments"), deadline, writes)
            return ("ok", None if result is None else wire.pack_columns(result))
        except EdgeError as exc:
            return ("error", exc.code, exc.message)
    def _changed(self, w: _Worker) -> dict[str, list[Any]]:
        """The declared snapshots whose current version ``w`` does not hold yet, exported."""
        if not self._declared:
            return {}
        view = self._features()
        return {n: snapshot_format.export(s) for n in self._declared
                if (s := view.get(n)) is not None and w.snaps.get(n) != s.version}

    def _sync(self, w: _Worker) -> None:
        """Before a call: send ``w`` the snapshot versions it lacks, once per worker and version
        (a worker reads the set it holds when a call starts, for the whole call)."""
        changed = self._changed(w)
        if changed:
            w.chan.send("snapshots", changed)
            w.snaps.update((n, doc[0]["version"]) for n, doc in changed.items())

    def _acquire(self, deadline: float, label: str) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise Closed(f"{label}: bundle {self.name} was unloaded or replaced")
                if self._idle:
                    w = self._idle.popleft()
                    w.state = BUSY
                    return w
                if not self._workers and not self._spare and self.sup.restarting:
                    raise Busy(f"{label}: the worker zygote is being restarted (it died); try again shortly")
                if not self._workers and not self._spare and not self._starting and time.monotonic() < self._retry_at:
                    raise Crashed(f"{label}: the worker processes of bundle {self.name} keep failing to start; "
                                  f"next attempt in {self._retry_at - time.monotonic():.1f} s")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"{label} waited for a worker process past its deadline")
                self._waiters += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._waiters -= 1

    def _overdue(self, w: _Worker) -> None:
        """``w`` missed its call's deadline: a spare serves the next calls in its place."""
        with self._cond:
            if w.state != BUSY:
                return
            w.state = OVERDUE
            self._workers.remove(w)
            self._promote()
            self._cond.notify_all()

    def _promote(self) -> None:
        """A spare becomes an active worker (lock held)."""
        if self._spare and not self._closed and len(self._workers) < self.size:
            spare = self._spare.pop()
            spare.state = IDLE
            self._workers.append(spare)
            self._idle.append(spare)

    def _release(self, w: _Worker) -> None:
        with self._cond:
            if w.state not in (BUSY, OVERDUE):
                return
            dismiss = w.retire or self._closed
            if dismiss:
                if w in self._workers:
                    self._workers.remove(w)
            elif w.state == BUSY:
                self._idle.append(w)
            elif len(self._workers) < self.size:  # an overdue worker that answered after all
                self._workers.append(w)
                self._idle.append(w)
            elif len(self._spare) < self.spares:
                self._spare.append(w)
            else:
                dismiss = True
            w.state = DEAD if dismiss else (SPARE if w in self._spare else IDLE)
            self._cond.notify_all()
        if dismiss:
            self._dismiss(w)

    def _lose(self, w: _Worker, *, kill: bool) -> None:
        """``w`` is gone or must go: kill it, promote a spare, and let maintenance start another."""
        if kill:
            self.sup.kill(w.pid)
        with self._cond:
            if w.state == DEAD:
                return
            was = w.state
            w.state = DEAD
            if w in self._workers:
                self._workers.remove(w)
            if w in self._spare:
                self._spare.remove(w)
            if w in self._idle:
                self._idle.remove(w)
            if was != SPARE:
                self._promote()
            self._cond.notify_all()
        w.chan.close()

    # -- workers ----------------------------------------------------------------------------

    def _launch(self, deadline: float) -> _Worker:
        pid, sock = self.sup.spawn(deadline)
        w = _Worker(pid, Channel(sock, max_frame=self._max_frame))
        self.sup.watch(pid, lambda status, w=w: self._exited(w, status))
        self.counts["started"] += 1
        snaps = self._changed(w)
        w.snaps.update((n, doc[0]["version"]) for n, doc in snaps.items())
        try:
            w.chan.send("load", self._export, {**self._settings, "load_deadline": deadline, "snapshots": snaps})
        except ChannelError:
            pass  # it died already: _await_ready reports how
        return w

    def _await_ready(self, w: _Worker, deadline: float) -> None:
        try:
            while True:
                msg = w.chan.recv(deadline)
                if msg[0] == "log" and len(msg) == 2 and isinstance(msg[1], str):
                    self._on_log(msg[1])
                    continue
                if msg[0] == "ready":
                    return
                if msg[0] == "error" and len(msg) == 5:
                    raise _error(msg[2], msg[3], msg[4])
                raise ChannelError("the worker sent something else than ready or an error")
        except ChannelTimeout:
            raise Timeout(f"loading bundle {self.name} in a worker process did not finish before its deadline") \
                from None
        except ChannelError:
            w.exited.wait(EXIT_WAIT_S)
            raise Crashed(f"the worker process loading bundle {self.name} {describe_exit(w.status)}") from None

    def _drop(self, w: _Worker, *, kill: bool) -> None:
        if kill:
            self.sup.kill(w.pid)
        w.state = DEAD
        w.chan.close()

    def _dismiss(self, w: _Worker) -> None:
        """Ask an idle worker to exit (it is killed if it cannot take the message)."""
        try:
            w.chan.send("exit")
        except ChannelError:
            self.sup.kill(w.pid)
        w.state = DEAD
        w.chan.close()

    def _exited(self, w: _Worker, status: int | None) -> None:
        """Monitor thread: worker ``w`` exited."""
        w.status = status
        w.exited.set()
        with self._cond:
            gone = w.state in (IDLE, SPARE)
        if gone:  # died between calls: nobody is waiting on it
            self.counts["crashed"] += 1
            log.warning("worker process %d of bundle %s %s while idle", w.pid, self.name, describe_exit(status))
            self._lose(w, kill=False)
        with self._cond:
            self._cond.notify_all()

    def _maintain(self) -> None:
        """Keep ``size`` workers and ``spares`` spares, with a backoff for workers that fail to start."""
        while True:
            with self._cond:
                while not self._closed and (len(self._workers) + self._starting >= self.size
                                            and len(self._spare) >= (0 if self._retiring else self.spares)
                                            or time.monotonic() < self._retry_at) and not self._unrehearsed():
                    wait = self._retry_at - time.monotonic() if time.monotonic() < self._retry_at else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                spare = self._unrehearsed()
                if spare is not None:  # a spare that was ready before any request: take it out to rehearse
                    self._spare.remove(spare)
                    spare.state = STARTING
                self._starting += 1
            if spare is not None:
                try:
                    self._rehearse(spare, time.monotonic() + float(self._settings["load_timeout_s"]))
                except EdgeError as exc:
                    log.warning("%s", exc)
                self._enlist(spare)
                continue
            deadline = time.monotonic() + float(self._settings["load_timeout_s"])
            w = None
            try:
                w = self._launch(deadline)
                self._await_ready(w, deadline)
                self._rehearse(w, deadline)
            except EdgeError as exc:
                if w is not None:
                    self._drop(w, kill=True)
                with self._cond:
                    self._starting -= 1
                    if self._closed:
                        return
                    if self.sup.restarting:  # not this bundle's fault: wait for the new zygote
                        backoff = 0.05
                    else:
                        self._failures += 1
                        self.counts["start_failures"] += 1
                        backoff = min(0.05 * 2 ** self._failures, MAX_BACKOFF_S)
                    self._retry_at = time.monotonic() + backoff
                    self._cond.notify_all()
                log.log(logging.DEBUG if self.sup.restarting else logging.WARNING,
                        "a worker process of bundle %s failed to start (%s); retrying in %.2f s", self.name, exc, backoff)
                continue
            self._enlist(w)

    def _unrehearsed(self) -> _Worker | None:
        """A spare that has not rehearsed the latest request (lock held)."""
        if self._sample is None or self._closed:
            return None
        return next((s for s in self._spare if not s.rehearsed), None)

    def _rehearse(self, w: _Worker, deadline: float) -> None:
        """Run the latest request on a new worker once, result and output discarded. A worker that
        breaks the protocol or dies doing it raises ``Crashed`` (it is not enlisted)."""
        sample = self._sample
        w.rehearsed = True
        if sample is None:
            return
        cid = next(self._ids)
        try:
            self._sync(w)
            w.chan.send("call", cid, "invoke", sample[0], sample[1], deadline, [], [])
            while True:
                msg = w.chan.recv(deadline)
                if msg[0] == "log":
                    continue
                if msg[0] == "events" and len(msg) == 3:
                    w.chan.send("events", *self._serve_events(msg[1], msg[2], deadline, writes=False))
                    continue
                if msg[0] in ("ok", "error") and len(msg) in (3, 5) and msg[1] == cid:
                    return
                raise ChannelError("the worker sent a frame that is not a reply to its rehearsal")
        except ChannelError as exc:
            self._drop(w, kill=True)
            raise Crashed(f"a new worker process of bundle {self.name} failed its rehearsal ({exc})") from None

    def _enlist(self, w: _Worker) -> None:
        """A ready worker joins the active workers or the spares (or exits if the pool closed)."""
        if w.state == DEAD:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
            return
        with self._cond:
            self._starting -= 1
            self._failures = 0
            retire = self._closed
            if retire:
                pass
            elif len(self._workers) < self.size:
                w.state = IDLE
                self._workers.append(w)
                self._idle.append(w)
            else:
                w.state = SPARE
                self._spare.append(w)
            self._cond.notify_all()
        if retire:
            self._dismiss(w)


def _error(code: Any, message: Any, detail: Any) -> EdgeError:
    """The typed error a worker reported, checked like any other input from it."""
    cls = _BY_CODE.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    if cls is None or not isinstance(message, str) or not isinstance(detail, dict):
        raise ChannelError("the worker sent a malformed error")
    return cls(message[:8192], detail=detail)
