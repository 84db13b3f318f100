"""The supervisor: the host side of process isolation. It starts the zygote (a fresh interpreter,
never a fork of the host), asks it for workers, learns of every worker's exit, and kills workers.

One ``Supervisor`` per runtime. Its monitor thread is the only reader of the zygote's control socket:
it hands ``spawned`` replies to the threads waiting for them and ``exited`` reports (with the wait
status) to the pool that owns the worker. Kills go through the zygote, the workers' parent, which
kills only children it has not reaped yet, so a recycled pid is never hit. The zygote and its
workers never outlive the supervisor: closing the control socket makes the zygote kill its workers
(and a worker dies with the zygote: ``PR_SET_PDEATHSIG``).
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


class Supervisor:
    """The zygote and the workers it forks for one runtime (thread-safe)."""

    def __init__(self, *, start_timeout_s: float = 60.0) -> None:
        self._start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}
        self._owners: dict[int, Callable[[int | None], None]] = {}  # pid -> on_exit(wait status)
        self._exits: dict[int, int] = {}                     # exits nobody claimed yet
        self._ready = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._fatal: str | None = None
        self._closed = False
        self.info: dict[str, Any] = {}
        self.spawned = 0
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._ctl = parent
        env = {**THREAD_ENV, "EDGEVM_ZYGOTE_FD": str(child.fileno()), "EDGEVM_ZYGOTE_PATH": _search_path()}
        if os.environ.get("PYTHONMALLOC"):
            env["PYTHONMALLOC"] = os.environ["PYTHONMALLOC"]
        try:
            self._proc = subprocess.Popen(launch_command(), env=env, pass_fds=(child.fileno(),),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, close_fds=True)
        finally:
            child.close()
        self._monitor = threading.Thread(target=self._loop, name="edgevm-supervisor", daemon=True)
        self._monitor.start()

    # -- the zygote -------------------------------------------------------------------------

    def wait_ready(self, deadline: float) -> None:
        """Block until the zygote has imported everything (it starts in the background)."""
        if not self._ready.wait(max(min(deadline, time.monotonic() + self._start_timeout_s) - time.monotonic(), 0)):
            raise Timeout("the worker zygote did not start in time")
        if self._fatal is not None:
            raise Crashed(f"the worker zygote failed: {self._fatal}")

    @property
    def zygote_pid(self) -> int:
        return self._proc.pid

    def spawn(self, deadline: float) -> tuple[int, socket.socket]:
        """A new worker process and the supervisor's end of its channel (a stream socketpair)."""
        self.wait_ready(deadline)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        token = next(self._tokens)
        slot: list[Any] = []
        with self._lock:
            self._waiting[token] = slot
        try:
            try:
                socket.send_fds(self._ctl, [msgpack.packb(["spawn", token])], [theirs.fileno()])
            except OSError as exc:
                raise Crashed(f"the worker zygote is gone ({exc.strerror})") from None
            finally:
                theirs.close()
            with self._changed:
                while not slot and self._fatal is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Timeout("the worker zygote did not fork a worker in time")
                    self._changed.wait(left)
                if not slot:
                    raise Crashed(f"the worker zygote failed: {self._fatal}")
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
        try:
            self._ctl.send(msgpack.packb(["kill", pid]))
        except OSError:
            pass

    def alive(self) -> bool:
        return self._fatal is None and self._proc.poll() is None

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the zygote, which kills every worker it has; reap it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._ctl.send(msgpack.packb(["exit"]))
        except OSError:
            pass
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._ctl.close()
        self._monitor.join(timeout_s)
        if self._proc.stderr is not None:
            self._proc.stderr.close()

    # -- the monitor thread -----------------------------------------------------------------

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._ctl, selectors.EVENT_READ, "ctl")
        if self._proc.stderr is not None:
            sel.register(self._proc.stderr, selectors.EVENT_READ, "stderr")
        lines = 0
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "stderr":
                        line = self._proc.stderr.readline()  # type: ignore[union-attr]
                        if not line:
                            sel.unregister(key.fileobj)
                        elif lines < MAX_STDERR_LINES:
                            lines += 1
                            log.warning("worker zygote: %s", line.decode("utf-8", "replace").rstrip())
                        continue
                    try:
                        data = self._ctl.recv(MAX_CONTROL)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    self._handle(data)
        finally:
            sel.close()
            code = self._proc.poll()
            self._zygote_gone("it exited" if code is None else describe_exit(self._proc.returncode))

    def _handle(self, data: bytes) -> None:
        try:
            msg = msgpack.unpackb(data, raw=False)
            kind = msg[0]
        except Exception:  # noqa: BLE001 - the zygote is ours; a bad packet is a bug, not a reason to stop
            log.error("worker zygote sent an unreadable message")
            return
        if kind == "ready":
            self.info = dict(msg[1])
            self._ready.set()
        elif kind == "fatal":
            self._zygote_gone(str(msg[1]))
        elif kind in ("spawned", "failed"):
            with self._changed:
                slot = self._waiting.get(msg[1])
                if slot is not None:
                    slot.extend((kind, msg[2]))
                self._changed.notify_all()
            if slot is None and kind == "spawned":
                self.kill(msg[2])  # its requester gave up waiting
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

    def _zygote_gone(self, why: str) -> None:
        with self._changed:
            if self._fatal is None:
                self._fatal = why
            owners, self._owners = self._owners, {}
            self._changed.notify_all()
        self._ready.set()
        if not self._closed:
            log.error("the worker zygote stopped: %s", why)
        for on_exit in owners.values():  # its workers die with it
            try:
                on_exit(None)
            except Exception:  # noqa: BLE001
                log.exception("exit handler failed")
