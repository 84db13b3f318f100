"""The zygote: a fresh interpreter, started by the supervisor, that has imported everything a worker
needs and forks workers on request.

It is never a fork of the host (a host may have threads of its own, such as a JVM's): the
supervisor starts it with exec (``launch_command``). It imports the runtime, numpy, ONNX Runtime's
library (``vm.ml.ortapi``) and the vetted library, creates no model session and starts no thread of its own (``main`` checks that
only the threads the imports started exist), then serves its control socket: ``spawn`` (with the
worker's channel end attached) forks a worker (``vm.isolation.worker``); it reaps every child and
reports each exit. When the supervisor goes away (the control socket closes), it kills its workers
and exits, so no worker outlives the host.

Control messages are single msgpack packets on a SOCK_SEQPACKET socket:
    supervisor -> zygote   ["spawn", token] + one fd, ["kill", pid], ["exit"]
    zygote -> supervisor   ["ready", info], ["spawned", token, pid], ["exited", pid, wait_status],
                           ["failed", token, message]
"""
from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import threading
from typing import Any

import msgpack

# Set before numpy and ONNX Runtime are loaded: one thread each, and few malloc arenas (each
# worker inherits these; their address space counts against the worker's limit).
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
MAX_CONTROL = 1 << 16
# Threads the imports may start: ONNX Runtime starts one (measured: FIELD-NOTES.md).
MAX_IMPORT_THREADS = 1


def native_threads() -> int:
    """Threads of this process (Linux: /proc; elsewhere the Python threads)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def preload() -> None:
    """Import what any worker may need, so that a worker imports nothing after its lockdown. An
    install without ONNX Runtime still runs bundles without models (a worker whose bundle has models
    then fails its load with a typed error, before its lockdown)."""
    import numpy  # noqa: F401

    from vm.errors import IncompatibleError
    from vm.ml import ortapi

    try:
        ortapi.load()
    except IncompatibleError:
        pass

    import stdlib_slim
    from vm.execution import executor, watchdog  # noqa: F401
    from vm.isolation import lockdown, worker  # noqa: F401
    from vm.ml import models  # noqa: F401
    from vm.sandbox import edge, instance  # noqa: F401

    stdlib_slim.preload()
    edge.preload()


def _send(ctl: socket.socket, *items: Any) -> None:
    try:
        ctl.send(msgpack.packb(list(items), use_bin_type=True), socket.MSG_NOSIGNAL)
    except OSError:
        pass  # the supervisor is gone; the loop notices


def main() -> None:
    """Entry point of the zygote process (see ``vm.isolation.supervisor.launch_command``)."""
    fd = int(os.environ.pop("EDGEVM_ZYGOTE_FD"))
    ctl = socket.socket(fileno=fd)
    before = native_threads()
    preload()
    threads = native_threads()
    if threading.active_count() != 1 or threads - before > MAX_IMPORT_THREADS:
        _send(ctl, "fatal", f"the zygote has {threads} threads after its imports ({before} before); "
                            f"forking it would not be safe")
        sys.exit(70)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _send(ctl, "ready", {"pid": os.getpid(), "threads": threads, "python": sys.version.split()[0]})
    children: set[int] = set()
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ, "ctl")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    try:
        while True:
            for key, _ in sel.select():
                if key.data == "wake":
                    _drain(wake_r)
                    _reap(ctl, children)
                    continue
                try:
                    data, fds, _flags, _addr = socket.recv_fds(ctl, MAX_CONTROL, 1)
                except OSError:
                    return
                if not data:
                    return  # the supervisor closed its end
                msg = msgpack.unpackb(data, raw=False)
                if msg[0] == "exit":
                    return
                if msg[0] == "spawn":
                    _spawn(ctl, msg[1], fds, children, (ctl.fileno(), wake_r, wake_w))
                elif msg[0] == "kill" and msg[1] in children:  # not reaped yet: the pid is still the worker's
                    os.kill(msg[1], signal.SIGKILL)
                else:
                    for fd_ in fds:
                        os.close(fd_)
            _reap(ctl, children)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in list(children):
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _reap(ctl: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(ctl, "exited", pid, status)


def _spawn(ctl: socket.socket, token: Any, fds: list[int], children: set[int], close_in_child: tuple[int, ...]) -> None:
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        _send(ctl, "failed", token, "spawn needs exactly one channel fd")
        return
    (chan_fd,) = fds
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(chan_fd)
        _send(ctl, "failed", token, f"fork failed: {exc.strerror}")
        return
    if pid == 0:  # the worker
        code = 70
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in close_in_child:
                os.close(fd)
            from vm.isolation import lockdown, worker

            lockdown.die_with_parent()
            if os.getppid() != parent:
                os._exit(code)
            code = worker.serve(chan_fd)
        finally:
            os._exit(code)
    os.close(chan_fd)
    children.add(pid)
    _send(ctl, "spawned", token, pid)


if __name__ == "__main__":
    main()
