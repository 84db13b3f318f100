"""Run code in a forked child that locks itself down, and bring its results back to the parent.

The parent (the test process) is never locked down: only the child calls ``lockdown.apply``. The
child keeps one end of a socketpair (plus any fds the test asks for), runs the test's ``check``
after the lockdown and sends back a pickle of what it returned; the parent also gets the child's
wait status, so a child killed by a signal (SIGXCPU, SIGSYS) is seen as such.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vm.isolation import lockdown


@dataclass
class Outcome:
    """What came back from a locked-down child."""

    applied: dict | None  # apply's return value (None: the child died before reporting it)
    result: Any  # check's return value
    error: str | None  # a traceback, if check (or prepare, or apply) raised
    status: int  # os.waitpid status

    @property
    def signal(self) -> int | None:
        """The signal that killed the child, if one did."""
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """("ok", value) or (the exception's class name, its errno) — what the child reports back."""
    try:
        return ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # the test decides what is acceptable
        return (type(exc).__name__, getattr(exc, "errno", None))


def _send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj)
    sock.sendall(len(data).to_bytes(8, "little") + data)


def _child(
    sock: socket.socket,
    prepare: Callable[[], Any] | None,
    keep: Callable[[Any], Iterable[int]],
    options: Callable[[Any], dict],
    check: Callable[[Any], Any],
    on_locked: bool,
    apply_kwargs: dict,
) -> None:
    report: dict[str, Any] = {"applied": None, "result": None, "error": None}
    try:
        state = prepare() if prepare else None
        kwargs = {**apply_kwargs, **options(state)}
        report["applied"] = lockdown.apply([sock.fileno(), *keep(state)], **kwargs)
        if on_locked:
            sock.sendall(b"L")
            sock.recv(1)
        report["result"] = check(state)
    except BaseException:  # reported to the parent
        report["error"] = traceback.format_exc()
    _send(sock, report)


def run_locked(
    check: Callable[[Any], Any],
    *,
    prepare: Callable[[], Any] | None = None,
    keep: Callable[[Any], Iterable[int]] = lambda state: (),
    options: Callable[[Any], dict] = lambda state: {},
    on_locked: Callable[[int], None] | None = None,
    timeout: float = 60.0,
    **apply_kwargs: Any,
) -> Outcome:
    """Fork; in the child: state = prepare(), lockdown.apply(channel + keep(state), **apply_kwargs,
    **options(state)), then check(state). ``on_locked(pid)`` runs in the parent while the locked
    child waits."""
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test process's code
        try:
            parent.close()
            _child(child, prepare, keep, options, check, on_locked is not None, apply_kwargs)
        finally:
            os._exit(0)
    child.close()
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([parent], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError(f"the locked-down child did not answer within {timeout} s")
            chunk = parent.recv(1 << 20)
            if not chunk:
                break
            if on_locked is not None and data == b"" and chunk.startswith(b"L"):
                on_locked(pid)
                parent.sendall(b"G")
                chunk = chunk[1:]
            data += chunk
    finally:
        parent.close()
        _, status = os.waitpid(pid, 0)
    if not data:
        return Outcome(None, None, None, status)
    report = pickle.loads(data[8:])
    return Outcome(report["applied"], report["result"], report["error"], status)
