"""The supervisor: the host side of process isolation. It starts the zygote (a fresh interpreter,
never a fork of the host), asks it for workers, learns of every worker's exit, and kills workers.

One ``Supervisor`` per runtime. Its monitor thread is the only reader of the zygote's control socket:
it hands ``spawned`` replies to the threads waiting for them and ``exited`` reports (with the wait
status) to the pool that owns the worker. Kills go through the zygote, the workers' parent, which
kills only children it has not reaped yet, so a recycled pid is never hit. The zygote and its
workers never outlive the supervisor: closing the control socket makes the zygote kill its workers
(and a worker dies with the zygote: ``PR_SET_PDEATHSIG``). A zygote that dies is restarted, with an
exponential backoff; its workers died with it, and the pools replace them from the new one.
"""
from __future__ import annotations

import itertools
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from vm.errors import Crashed, Timeout
from vm.isolation.zygote import MAX_CONTROL, THREAD_ENV

log = logging.getLogger("edgevm.isolation")

_BOOT = ("import os, sys; sys.path[:0] = [p for p in os.environ.pop('EDGEVM_ZYGOTE_PATH').split(os.pathsep) if p]; "
         "from vm.isolation.zygote import main; main()")
# The program that starts zygotes where sys.executable is not a Python (an app embedding libedgevm):
# edgevm-zygote (native/zygote/launcher.c), beside the library; the C API's glue sets its path.
LAUNCHER_NAME = "edgevm-zygote"
launcher: str | None = None
MAX_STDERR_LINES = 200


def launch_command() -> list[str]:
    """How to start a zygote: the launcher beside libedgevm in an embedding host, else this Python."""
    if launcher is not None:
        if not os.access(launcher, os.X_OK):
            raise Crashed(f"process isolation needs {launcher}, the worker zygote's launcher, beside libedgevm "
                          f"(reinstall edgevm, or set \"isolation\": \"thread\")")
        return [launcher, "-c", _BOOT]
    return [sys.executable, "-I", "-S", "-c", _BOOT]


def _search_path() -> str:
    import stdlib_slim
    import vm

    roots = [str(Path(m.__file__).resolve().parent.parent) for m in (vm, stdlib_slim)]
    return os.pathsep.join(dict.fromkeys([*roots, *(p for p in sys.path if p and os.path.isdir(p))]))


def describe_exit(status: int | None) -> str:
    """A wait status in words."""
    if status is None:
        return "died"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by signal {sig} ({name})"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended (wait status {status})"


class _Zygote:
    """One zygote process and the supervisor's end of its control socket."""

    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ctl = parent
        env = {**THREAD_ENV, "EDGEVM_ZYGOTE_FD": str(child.fileno()), "EDGEVM_ZYGOTE_PATH": _search_path()}
        for name in ("PYTHONMALLOC", "EDGEVM_PYTHONHOME"):  # the allocator, and a relocated Python's home
            if os.environ.get(name):
                env[name] = os.environ[name]
        try:
            self.proc = subprocess.Popen(launch_command(), env=env, pass_fds=(child.fileno(),),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, close_fds=True)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.ready = threading.Event()
        self.fatal: str | None = None
        self.started = time.monotonic()
        self.info: dict[str, Any] = {}
        self.monitor: threading.Thread | None = None

    def send(self, *items: Any) -> None:
        try:
            self.ctl.send(msgpack.packb(list(items)), socket.MSG_NOSIGNAL)
        except OSError:
            pass


class Supervisor:
    """The zygote and the workers it forks for one runtime (thread-safe)."""

    def __init__(self, *, start_timeout_s: float = 60.0) -> None:
        self._start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}
        self._owners: dict[int, Callable[[int | None], None]] = {}  # pid -> on_exit(wait status)
        self._exits: dict[int, int] = {}                     # exits nobody claimed yet
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._restarts = 0
        self.spawned = 0
        self.zygotes_started = 0
        self._zy = self._start()

    def _start(self) -> _Zygote:
        zy = _Zygote()
        self.zygotes_started += 1
        zy.monitor = threading.Thread(target=self._loop, args=(zy,), name="edgevm-supervisor", daemon=True)
        zy.monitor.start()
        return zy

    # -- the zygote -------------------------------------------------------------------------

    def wait_ready(self, deadline: float) -> None:
        """Block until the zygote has imported everything (it starts in the background)."""
        zy = self._zy
        if not zy.ready.wait(max(min(deadline, time.monotonic() + self._start_timeout_s) - time.monotonic(), 0)):
            raise Timeout("the worker zygote did not start in time")
        if zy.fatal is not None:
            raise Crashed(f"the worker zygote failed: {zy.fatal} (it is being restarted)")

    @property
    def restarting(self) -> bool:
        """The zygote died and a new one is not ready yet (workers cannot start meanwhile)."""
        zy = self._zy
        return zy.fatal is not None or (not zy.ready.is_set() and self.zygotes_started > 1)

    @property
    def zygote_pid(self) -> int:
        return self._zy.proc.pid

    @property
    def info(self) -> dict[str, Any]:
        return self._zy.info

    def spawn(self, deadline: float) -> tuple[int, socket.socket]:
        """A new worker process and the supervisor's end of its channel (a stream socketpair)."""
        self.wait_ready(deadline)
        zy = self._zy
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        token = next(self._tokens)
        slot: list[Any] = []
        with self._lock:
            self._waiting[token] = slot
        try:
            try:
                socket.send_fds(zy.ctl, [msgpack.packb(["spawn", token])], [theirs.fileno()], socket.MSG_NOSIGNAL)
            except OSError as exc:
                raise Crashed(f"the worker zygote is gone ({exc.strerror})") from None
            finally:
                theirs.close()
            with self._changed:
                while not slot and zy.fatal is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Timeout("the worker zygote did not fork a worker in time")
                    self._changed.wait(left)
                if not slot:
                    raise Crashed(f"the worker zygote failed: {zy.fatal}")
        except BaseException:
            mine.close()
            raise
        finally:
            with self._lock:
                self._waiting.pop(token, None)
        kind, value = slot
        if kind == "failed":
            mine.close()
            raise Crashed(f"the worker zygote could not fork: {value}")
        self.spawned += 1
        return value, mine

    def watch(self, pid: int, on_exit: Callable[[int | None], None]) -> None:
        """Call ``on_exit(wait_status)`` (on the monitor thread) when worker ``pid`` exits (None: the
        zygote died, and its workers with it)."""
        with self._lock:
            status = self._exits.pop(pid, None)
            if status is None:
                self._owners[pid] = on_exit
                return
        on_exit(status)

    def kill(self, pid: int) -> None:
        """SIGKILL worker ``pid`` (through the zygote, its parent; a no-op once it was reaped)."""
        self._zy.send("kill", pid)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the zygote, which kills every worker it has; reap it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            zy = self._zy
        zy.send("exit")
        try:
            zy.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            zy.proc.kill()
            zy.proc.wait()
        if zy.monitor is not None:
            zy.monitor.join(timeout_s)  # it stops at the socket's end of file, then closes its selector
        zy.ctl.close()
        if zy.proc.stderr is not None:
            zy.proc.stderr.close()

    # -- the monitor thread (one per zygote) ------------------------------------------------

    def _loop(self, zy: _Zygote) -> None:
        sel = selectors.DefaultSelector()
        sel.register(zy.ctl, selectors.EVENT_READ, "ctl")
        if zy.proc.stderr is not None:
            sel.register(zy.proc.stderr, selectors.EVENT_READ, "stderr")
        lines = 0
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "stderr":
                        line = zy.proc.stderr.readline()  # type: ignore[union-attr]
                        if not line:
                            sel.unregister(key.fileobj)
                        elif lines < MAX_STDERR_LINES:
                            lines += 1
                            log.warning("worker zygote: %s", line.decode("utf-8", "replace").rstrip())
                        continue
                    try:
                        data = zy.ctl.recv(MAX_CONTROL)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    self._handle(zy, data)
        finally:
            sel.close()
            try:
                status = zy.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                status = None
            self._zygote_gone(zy, "it closed its control socket" if status is None
                              else describe_exit(_wait_status(status)))

    def _handle(self, zy: _Zygote, data: bytes) -> None:
        try:
            msg = msgpack.unpackb(data, raw=False)
            kind = msg[0]
        except Exception:  # noqa: BLE001 - the zygote is ours; a bad packet is a bug, not a reason to stop
            log.error("worker zygote sent an unreadable message")
            return
        if kind == "ready":
            zy.info = dict(msg[1])
            zy.ready.set()
        elif kind == "fatal":
            self._zygote_gone(zy, str(msg[1]))
        elif kind in ("spawned", "failed"):
            with self._changed:
                slot = self._waiting.get(msg[1])
                if slot is not None:
                    slot.extend((kind, msg[2]))
                self._changed.notify_all()
            if slot is None and kind == "spawned":
                zy.send("kill", msg[2])  # its requester gave up waiting
        elif kind == "exited":
            pid, status = int(msg[1]), int(msg[2])
            with self._lock:
                owner = self._owners.pop(pid, None)
                if owner is None:
                    self._exits[pid] = status
                    if len(self._exits) > 4096:
                        self._exits.pop(next(iter(self._exits)))
            if owner is not None:
                try:
                    owner(status)
                except Exception:  # noqa: BLE001 - the monitor must survive a bug in a pool
                    log.exception("exit handler of worker %d failed", pid)

    def _zygote_gone(self, zy: _Zygote, why: str) -> None:
        with self._changed:
            if zy.fatal is not None:
                return
            zy.fatal = why
            current = zy is self._zy
            owners, self._owners = (self._owners, {}) if current else ({}, self._owners)
            self._changed.notify_all()
            closed = self._closed
        zy.ready.set()
        for on_exit in owners.values():  # its workers died with it
            try:
                on_exit(None)
            except Exception:  # noqa: BLE001
                log.exception("exit handler failed")
        if closed or not current:
            return
        if time.monotonic() - zy.started > 60:
            self._restarts = 0
        delay = min(0.1 * 2 ** self._restarts, 30.0)
        self._restarts += 1
        log.error("the worker zygote stopped: %s; restarting it in %.1f s", why, delay)
        threading.Timer(delay, self._restart).start()

    def _restart(self) -> None:
        with self._lock:
            if self._closed:
                return
        try:
            zy = self._start()
        except Exception as exc:  # noqa: BLE001 - calls report the dead zygote meanwhile; try again later
            log.error("cannot restart the worker zygote: %s", exc)
            threading.Timer(min(0.1 * 2 ** self._restarts, 30.0), self._restart).start()
            self._restarts += 1
            return
        with self._changed:
            closed = self._closed
            if not closed:
                self._zy = zy
            self._changed.notify_all()
        if closed:
            zy.send("exit")


def _wait_status(returncode: int) -> int:
    """A Popen return code as a wait status (negative: killed by that signal)."""
    return (-returncode) & 0x7F if returncode < 0 else (returncode & 0xFF) << 8
