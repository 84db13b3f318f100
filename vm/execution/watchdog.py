"""Deadlines for guarded calls, enforced off the hot path.

A worker thread runs a script call through ``Watchdog.run(deadline, fn, *args)``. One watchdog thread
sleeps until the earliest deadline; when it passes it runs the call's cancel hooks (for
example ONNX Runtime's ``RunOptions.terminate``) and raises ``ScriptTimeout`` asynchronously in
the worker (``PyThreadState_SetAsyncExc``), again every ``reinject_s`` in case the script
swallowed it. A call still running ``grace_s`` after its deadline is stuck in one long C-level
call (or refuses to die); the watchdog reports it through ``on_stuck`` so that its owner can
retire that worker and start another. Nothing is traced: the script's own bytecode runs at
full speed. ``vm.guard._guard.run_guarded`` arms the asynchronous exception only while ``fn`` itself
runs, so a late timeout can never surface in the runtime's own code; it also refuses the call's
large allocations once the deadline has passed, which stops a long C call that keeps allocating
even though this thread cannot run while that call holds the GIL.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from vm.execution import parking
from vm.guard import _guard
from vm.guard.context import SANDBOX_MARKER, CallContext, ScriptTimeout, bind


class Watchdog:
    """One thread that enforces every guarded call's deadline."""

    def __init__(self, *, grace_s: float = 0.05, reinject_s: float = 0.002,
                 on_stuck: Callable[[CallContext], None] | None = None) -> None:
        self.grace_s = grace_s
        self.reinject_s = reinject_s
        self.on_stuck = on_stuck
        self._heap: list[tuple[float, int, CallContext]] = []
        self._seq = itertools.count()
        self._cv = parking.Condition(threading.Lock())
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="edgevm-watchdog", daemon=True)
        self._thread.start()

    def run(self, deadline: float, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(*args)`` on this thread under ``deadline`` (a ``time.monotonic()`` value).

        A call that overruns raises ``ScriptTimeout`` from inside ``fn``."""
        ctx = CallContext(deadline, threading.get_ident(), self.grace_s)
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._seq), ctx))
            if self._heap[0][2] is ctx:
                self._cv.notify()
        bind(ctx)
        try:
            return _guard.run_guarded(ctx.flag, deadline, ScriptTimeout, fn, *args)
        finally:
            bind(None)
            ctx.flag[0] = 1

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=1.0)

    def _loop(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while not self._closed:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        cv.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    cv.wait(wait)
                if self._closed:
                    return
                _, _, ctx = heapq.heappop(self._heap)
            now = time.monotonic()
            if not ctx._expire():
                continue
            if now >= ctx.stuck_at and not ctx.stuck:
                ctx.stuck = True
                # Script code that keeps catching the timeout cannot go on past this point.
                _guard.kill_start(ctx.thread_id, ScriptTimeout, SANDBOX_MARKER)
                if self.on_stuck is not None:
                    try:
                        self.on_stuck(ctx)
                    except Exception:
                        pass
            # Keep raising until the call ends: a script may catch and loop again. A stuck
            # call (one long C call) is re-tried slowly; it is only retired once.
            delay = self.reinject_s if not ctx.stuck else max(self.grace_s, 0.05)
            nxt = now + delay
            if not ctx.stuck and nxt > ctx.stuck_at:
                nxt = ctx.stuck_at
            with cv:
                heapq.heappush(self._heap, (nxt, next(self._seq), ctx))
