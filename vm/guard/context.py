"""The guarded call running on a thread: its deadline, its cancel hooks, and the timeout it raises.

Everything that must know "how much time does this call have left" reads it here: the sandbox
(regex deadlines), the ``edge`` module (``edge.remaining_ms()``), model sessions (ONNX Runtime's
``RunOptions.terminate`` as a cancel hook), the vetted library. ``vm.execution.watchdog`` creates the
contexts and enforces them.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from vm.guard import _guard


class ScriptTimeout(BaseException):
    """Raised inside a script whose deadline passed. Not an ``Exception``: scripts only
    catch ``Exception`` subclasses, so an ordinary ``except`` does not swallow it."""


# A key every sandbox's builtins dict holds: it tells the guard which frames are script code.
SANDBOX_MARKER = "__edgevm_sandbox__"

_local = threading.local()


def current() -> CallContext | None:
    """The guarded call running on this thread, or None."""
    return getattr(_local, "ctx", None)


class CallContext:
    """One guarded call on one worker thread."""

    __slots__ = ("deadline", "thread_id", "expired", "stuck", "stuck_at", "flag", "_lock", "_cancels", "_ids")

    def __init__(self, deadline: float, thread_id: int, grace_s: float) -> None:
        self.deadline = deadline
        self.thread_id = thread_id
        self.expired = False
        self.stuck = False
        self.flag = bytearray([2])  # 2: not started, 0: running, 1: done (see native/guard/deadline.c)
        self.stuck_at = deadline + grace_s
        self._lock = threading.Lock()
        self._cancels: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    @property
    def done(self) -> bool:
        return self.flag[0] == 1

    def remaining(self) -> float:
        """Seconds left before the deadline (<= 0 once it passed)."""
        return self.deadline - time.monotonic()

    def add_cancel(self, fn: Callable[[], None]) -> int:
        """Register ``fn`` to run once, from the watchdog thread, when the deadline passes.
        If it already passed, ``fn`` runs now."""
        with self._lock:
            if not self.expired:
                token = next(self._ids)
                self._cancels[token] = fn
                return token
        fn()
        return -1

    def remove_cancel(self, token: int) -> None:
        with self._lock:
            self._cancels.pop(token, None)

    def _expire(self) -> bool:
        """Mark expired, run cancel hooks, raise in the worker. False once the call is done."""
        if self.done:
            return False
        with self._lock:
            first = not self.expired
            self.expired = True
            hooks = list(self._cancels.values()) if first else []
            self._cancels.clear()
        _guard.raise_unless_done(self.flag, self.thread_id, ScriptTimeout)
        for hook in hooks:
            try:
                hook()
            except Exception:  # a cancel hook must not kill the watchdog
                pass
        return True


def bind(ctx: CallContext | None) -> None:
    """Make ``ctx`` the guarded call of this thread (None: no call runs)."""
    _local.ctx = ctx
