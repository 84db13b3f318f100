"""vm.isolation.lockdown in real processes: each test forks a child that locks itself down and
reports back (tests/isolation/lockdown_harness.py); the test process itself is never locked down.

What is refused is refused with an errno Python turns into an exception (PermissionError: EPERM
from the seccomp filter, EACCES from Landlock), never with a crash; what the worker needs (the
workload in lockdown_workload.py) keeps running.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import math
import mmap
import os
import platform
import posix
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from lockdown_harness import attempt, run_locked
from lockdown_workload import expected_rank
from onnx import TensorProto, helper

from vm.isolation import lockdown
from vm.ml import ops

HERE = Path(__file__).resolve().parent
DENIED = ("PermissionError", errno.EPERM)  # what the seccomp filter answers
LANDLOCK_DENIED = ("PermissionError", errno.EACCES)  # what Landlock answers
LIBC = ctypes.CDLL(None, use_errno=True)  # dlopen(NULL): usable after the lockdown, nothing to open
MB = 1 << 20


def libc_call(name: str, *args: int) -> tuple[str, int]:
    """("ok", result) or ("errno", errno) for a libc function taking and returning longs."""
    fn = getattr(LIBC, name)
    fn.restype = ctypes.c_long
    fn.argtypes = [ctypes.c_long] * len(args)
    ctypes.set_errno(0)
    rc = fn(*args)
    return ("ok", rc) if rc != -1 else ("errno", ctypes.get_errno())


def locked(out) -> None:
    """The child locked down and its check ran to the end."""
    assert out.error is None, out.error
    assert out.applied is not None and out.applied["seccomp"] > 0
    assert os.WIFEXITED(out.status) and os.WEXITSTATUS(out.status) == 0


@pytest.fixture
def victim():
    """Another process of the same user, which a locked-down child must not be able to touch."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


# ---------------------------------------------------------------------------------------------
# what apply reports, and what the kernel says about the child


def test_apply_reports_what_it_applied():
    out = run_locked(lambda s: None, cpu_seconds=5000)
    locked(out)
    a = out.applied
    (fd,) = a["kept_fds"]
    assert a["nofile"] == fd + 1
    assert a["no_new_privs"] is True
    assert a["cpu_seconds"] == 5000 and a["address_space"] == 0 and a["data"] == 0
    assert a["landlock"] == lockdown.landlock_abi()
    assert a["arch"] == platform.machine()
    assert 50 < a["seccomp"] <= 256


def test_kernel_sees_no_new_privs_filter_on_every_thread_and_limits():
    """Read from outside, in /proc of the child while it waits: the filter is on every thread
    (including one started before the lockdown), no_new_privs is set, and the rlimits hold."""
    seen: dict[str, object] = {}

    def prepare() -> threading.Event:
        go = threading.Event()
        threading.Thread(target=go.wait, daemon=True).start()
        return go

    def inspect(pid: int) -> None:
        tasks = sorted(os.listdir(f"/proc/{pid}/task"))
        seen["tasks"] = len(tasks)
        seen["status"] = [Path(f"/proc/{pid}/task/{t}/status").read_text() for t in tasks]
        seen["limits"] = Path(f"/proc/{pid}/limits").read_text()

    def check(go: threading.Event) -> None:
        go.set()

    out = run_locked(check, prepare=prepare, on_locked=inspect, cpu_seconds=4000)
    locked(out)
    assert seen["tasks"] >= 2
    for status in seen["status"]:
        assert "NoNewPrivs:\t1" in status
        assert "Seccomp:\t2" in status  # SECCOMP_MODE_FILTER
    limits = {line[:26].strip(): line[26:].split() for line in seen["limits"].splitlines()[1:]}
    assert limits["Max core file size"][:2] == ["0", "0"]
    nofile = str(out.applied["nofile"])
    assert limits["Max open files"][:2] == [nofile, nofile]
    assert limits["Max cpu time"][0] == "4000"


def test_second_apply_raises_and_bad_arguments_change_nothing():
    def prepare() -> dict:
        resource.setrlimit(resource.RLIMIT_AS, (2**40, 2**40))
        os.environ["EDGEVM_PROBE"] = "1"
        extra = os.dup(0)
        bad = {
            "closed_fd": attempt(lockdown.apply, [10**6]),
            "negative": attempt(lockdown.apply, [], data=-1),
            "above_hard": attempt(lockdown.apply, [], address_space=2**41),
            "not_fds": attempt(lockdown.apply, ["0"]),
        }
        return {"bad": bad, "extra": extra, "env_kept": os.environ.get("EDGEVM_PROBE"),
                "extra_open": attempt(os.fstat, extra)[0]}

    def check(state: dict) -> dict:
        return {**state, "again": attempt(lockdown.apply, []), "again_bad": attempt(lockdown.apply, [-1])}

    out = run_locked(check, prepare=prepare)
    locked(out)
    r = out.result
    assert r["bad"] == {"closed_fd": ("ValueError", None), "negative": ("ValueError", None),
                        "above_hard": ("ValueError", None), "not_fds": ("TypeError", None)}
    assert r["env_kept"] == "1" and r["extra_open"] == "ok"  # the refused calls changed nothing
    assert r["again"] == ("RuntimeError", None) and r["again_bad"] == ("RuntimeError", None)


# ---------------------------------------------------------------------------------------------
# files, processes, network, signals, other processes' memory


def test_files_and_paths_are_refused(tmp_path: Path):
    existing = tmp_path / "secret.txt"
    existing.write_text("secret")
    (tmp_path / "sub").mkdir()

    def check(_) -> dict:
        return {
            "open": attempt(open, existing),
            "open_fd_level": attempt(os.open, str(existing), os.O_RDONLY),
            "create": attempt(open, tmp_path / "new.txt", "w"),
            "listdir": attempt(os.listdir, tmp_path),
            "scandir": attempt(lambda: list(os.scandir("/"))),
            "stat": attempt(os.stat, existing),
            "lstat": attempt(os.lstat, existing),
            "access": attempt(os.access, existing, os.R_OK),
            "readlink": attempt(os.readlink, "/proc/self/exe"),
            "mkdir": attempt(os.mkdir, tmp_path / "d"),
            "unlink": attempt(os.unlink, existing),
            "rmdir": attempt(os.rmdir, tmp_path / "sub"),
            "rename": attempt(os.rename, existing, tmp_path / "moved"),
            "symlink": attempt(os.symlink, existing, tmp_path / "link"),
            "chmod": attempt(os.chmod, existing, 0o777),
            "truncate": attempt(os.truncate, existing, 0),
            "chdir": attempt(os.chdir, "/"),
            "getcwd": attempt(os.getcwd),
            "exec": attempt(os.execv, "/bin/true", ["true"]),
        }

    out = run_locked(check)
    locked(out)
    r = out.result
    assert r.pop("access") == ("ok", False)  # os.access turns the refusal into False
    assert r == {k: DENIED for k in r}, r
    assert existing.read_text() == "secret" and (tmp_path / "sub").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt", "sub"]


def test_processes_are_refused_threads_are_not():
    def check(_) -> dict:
        started = threading.Event()
        t = threading.Thread(target=started.set)
        t.start()
        t.join(5)
        return {
            "fork": attempt(os.fork),
            "subprocess": attempt(subprocess.run, ["/bin/true"]),
            "posix_spawn": attempt(os.posix_spawn, "/bin/true", ["true"], {}),
            "vfork_like": attempt(os.posix_spawnp, "true", ["true"], {}),
            "clone3": libc_call("syscall", 435, 0, 0),  # refused with ENOSYS: glibc falls back to clone
            "thread": started.is_set(),
        }

    out = run_locked(check)
    locked(out)
    r = out.result
    assert r["fork"] == DENIED and r["posix_spawn"] == DENIED and r["vfork_like"] == DENIED
    assert r["subprocess"][0] == "PermissionError"
    assert r["clone3"] == ("errno", errno.ENOSYS)
    assert r["thread"] is True


def test_network_is_refused_even_on_a_kept_socket():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]

    def prepare() -> socket.socket:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def check(tcp: socket.socket) -> dict:
        return {
            "socket": attempt(socket.socket),
            "socketpair": attempt(socket.socketpair),
            "unix": attempt(socket.socket, socket.AF_UNIX, socket.SOCK_DGRAM),
            "connect": attempt(tcp.connect, ("127.0.0.1", port)),
            "bind": attempt(tcp.bind, ("127.0.0.1", 0)),
            "listen": attempt(tcp.listen),
        }

    try:
        out = run_locked(check, prepare=prepare, keep=lambda tcp: [tcp.fileno()])
        locked(out)
        assert out.result == {k: DENIED for k in out.result}, out.result
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()


def test_channel_sends_only_to_its_peer():
    def prepare() -> tuple[socket.socket, socket.socket]:
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    def check(pair: tuple[socket.socket, socket.socket]) -> dict:
        a, b = pair
        a.send(b"frame")
        return {
            "send_recv": b.recv(16),
            "sendto_address": attempt(a.sendto, b"x", "\0edgevm-elsewhere"),
            "setblocking": attempt(a.setblocking, False),  # ioctl(FIONBIO)
            "settimeout": attempt(b.settimeout, 0.1),
            "recv_timeout": attempt(b.recv, 1),  # poll() with a timeout
            "isatty": os.isatty(a.fileno()),  # ioctl(TCGETS) refused: not a tty
            "get_flags": attempt(fcntl.fcntl, a.fileno(), fcntl.F_GETFL)[0],
            "set_inheritable": attempt(os.set_inheritable, a.fileno(), True),
        }

    out = run_locked(check, prepare=prepare, keep=lambda p: [p[0].fileno(), p[1].fileno()])
    locked(out)
    r = out.result
    assert r["send_recv"] == b"frame"
    assert r["sendto_address"] == DENIED
    assert r["setblocking"] == ("ok", None) and r["settimeout"] == ("ok", None)
    assert r["recv_timeout"] == ("TimeoutError", None)
    assert r["isatty"] is False and r["get_flags"] == "ok" and r["set_inheritable"] == ("ok", None)


def test_signals_only_to_itself(victim):
    def prepare() -> tuple[list, int]:
        got: list = []
        signal.signal(signal.SIGUSR1, lambda *a: got.append("usr1"))
        return got, os.getpgrp()  # getpgrp is refused after the lockdown

    def check(state: tuple[list, int]) -> dict:
        got, group = state
        r = {
            "kill_victim": attempt(os.kill, victim.pid, signal.SIGKILL),
            "kill_parent": attempt(os.kill, os.getppid(), 0),
            "kill_group": attempt(os.kill, 0, 0),
            "kill_all": attempt(os.kill, -1, 0),
            "killpg": attempt(os.killpg, group, 0),
            "tkill_victim": libc_call("syscall", 200, victim.pid, 0),  # tkill: refused outright
            "tgkill_victim": libc_call("syscall", 234, victim.pid, victim.pid, 0),
            "self_probe": attempt(os.kill, os.getpid(), 0),
        }
        os.kill(os.getpid(), signal.SIGUSR1)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # tgkill on itself
        time.sleep(0.01)
        r["handled"] = list(got)
        return r

    out = run_locked(check, prepare=prepare)
    locked(out)
    r = out.result
    assert r.pop("self_probe") == ("ok", None)
    assert r.pop("handled") == ["usr1", "usr1"]
    assert r.pop("tkill_victim") == ("errno", errno.EPERM)
    assert r.pop("tgkill_victim") == ("errno", errno.EPERM)
    assert r == {k: DENIED for k in r}, r
    assert victim.poll() is None  # still alive


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers below are x86_64's")
def test_other_processes_memory_is_out_of_reach(victim):
    marker = ctypes.create_string_buffer(b"parent-memory-1234")  # same address in the forked child
    nbytes = len(marker.value)

    def read_parent() -> tuple[str, object]:
        buf = ctypes.create_string_buffer(nbytes)
        local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), nbytes)
        remote = (ctypes.c_void_p * 2)(ctypes.addressof(marker), nbytes)
        rc = libc_call("process_vm_readv", os.getppid(), ctypes.addressof(local), 1,
                       ctypes.addressof(remote), 1, 0)
        return (rc[0], buf.raw) if rc[0] == "ok" else rc

    def check(before) -> dict:
        return {
            "before": before,
            "after": read_parent(),
            "process_vm_writev": libc_call("syscall", 311, victim.pid, 0, 0, 0, 0, 0),
            "ptrace_attach": libc_call("ptrace", 16, victim.pid, 0, 0),  # PTRACE_ATTACH
            "ptrace_seize": libc_call("ptrace", 0x4206, victim.pid, 0, 0),  # PTRACE_SEIZE
            "ptrace_traceme": libc_call("ptrace", 0, 0, 0, 0),
            "proc_mem": attempt(open, f"/proc/{os.getppid()}/mem", "rb"),
        }

    out = run_locked(check, prepare=read_parent)
    locked(out)
    r = out.result
    assert r.pop("before") == ("ok", b"parent-memory-1234")  # the same call works before the lockdown
    assert r.pop("proc_mem") == DENIED
    assert r == {k: ("errno", errno.EPERM) for k in r}, r
    status = Path(f"/proc/{victim.pid}/status").read_text()
    assert "TracerPid:\t0" in status and victim.poll() is None


# ---------------------------------------------------------------------------------------------
# environment, fds, memory executable or not


def test_environment_is_empty():
    def prepare() -> None:
        os.environ["EDGEVM_SECRET"] = "s3cret"  # also putenv()s it into the C environment

    def check(_) -> dict:
        getenv = LIBC.getenv
        getenv.restype, getenv.argtypes = ctypes.c_char_p, [ctypes.c_char_p]
        return {
            "os.environ": dict(os.environ),
            "os.environb": dict(os.environb),
            "posix.environ": dict(posix.environ),
            "os.getenv": os.getenv("EDGEVM_SECRET"),
            "getenv": getenv(b"EDGEVM_SECRET"),
            "PATH": getenv(b"PATH"),
            "environ": ctypes.c_void_p.in_dll(LIBC, "environ").value,
        }

    assert os.environ.get("PATH")  # the parent has an environment to leak
    out = run_locked(check, prepare=prepare)
    locked(out)
    assert out.result == {"os.environ": {}, "os.environb": {}, "posix.environ": {}, "os.getenv": None,
                          "getenv": None, "PATH": None, "environ": None}
    assert "EDGEVM_SECRET" not in os.environ


def test_fds_not_kept_are_closed_and_no_new_fd_can_appear(tmp_path: Path):
    (tmp_path / "f").write_text("x")

    def prepare() -> dict:
        r, w = os.pipe()
        f = open(tmp_path / "f")
        return {"closed": [r, w, f.fileno(), os.dup(1), socket.socket().detach()], "file": f,
                "kept": os.dup(2)}

    def check(s: dict) -> dict:
        kept = s["kept"]
        return {
            "closed": [attempt(os.fstat, fd) for fd in s["closed"]],
            "file_read": attempt(s["file"].read),
            "kept": attempt(os.fstat, kept)[0],
            "pipe": attempt(os.pipe),
            "dup": attempt(os.dup, kept),
            "dup2": attempt(os.dup2, kept, kept + 1),
            "F_DUPFD": attempt(fcntl.fcntl, kept, fcntl.F_DUPFD, 0),
            "F_SETOWN": attempt(fcntl.fcntl, kept, fcntl.F_SETOWN, os.getppid()),
            "eventfd": attempt(os.eventfd, 0),
            "memfd": attempt(os.memfd_create, "x"),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            # the kernel would take these (no raise), the filter refuses them; resource.setrlimit
            # would turn EPERM into ValueError, prlimit keeps it
            "set_nofile": attempt(resource.prlimit, 0, resource.RLIMIT_NOFILE,
                                  resource.getrlimit(resource.RLIMIT_NOFILE)),
            "core": resource.getrlimit(resource.RLIMIT_CORE),
            "set_core": attempt(resource.prlimit, 0, resource.RLIMIT_CORE, (0, 0)),
            "prlimit_parent": attempt(resource.prlimit, os.getppid(), resource.RLIMIT_CPU),
        }

    out = run_locked(check, prepare=prepare, keep=lambda s: [s["kept"]])
    locked(out)
    r = out.result
    assert r["closed"] == [("OSError", errno.EBADF)] * 5
    assert r["file_read"] == ("OSError", errno.EBADF)
    assert r["kept"] == "ok"
    for k in ("pipe", "dup", "dup2", "F_DUPFD", "F_SETOWN", "eventfd", "memfd", "set_nofile", "set_core",
              "prlimit_parent"):
        assert r[k] == DENIED, (k, r[k])
    n = out.applied["nofile"]
    assert n == max(out.applied["kept_fds"]) + 1 and r["nofile"] == (n, n)
    assert r["core"] == (0, 0)


def test_no_executable_memory_after_lockdown():
    def check(_) -> dict:
        rw = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        rw[:4] = b"data"
        addr = ctypes.addressof(ctypes.c_char.from_buffer(rw))
        return {
            "rw": rw[:4],
            "rx": attempt(mmap.mmap, -1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC),
            "mprotect_x": libc_call("mprotect", addr, 4096, mmap.PROT_READ | mmap.PROT_EXEC),
            "mprotect_r": libc_call("mprotect", addr, 4096, mmap.PROT_READ),
        }

    out = run_locked(check)
    locked(out)
    assert out.result == {"rw": b"data", "rx": DENIED, "mprotect_x": ("errno", errno.EPERM),
                          "mprotect_r": ("ok", 0)}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64's second syscall ABIs")
def test_foreign_syscall_abi_kills_the_process():
    """The filter is written for the x86_64 numbers: an x32 or i386 (int 0x80) syscall kills."""
    out = run_locked(lambda s: libc_call("syscall", 0x40000000 | 39, 0))  # x32 getpid
    assert out.signal == signal.SIGSYS and out.applied is None

    def prepare():
        code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        code[:8] = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"  # mov eax, 20 (i386 getpid); int 0x80; ret
        fn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
        return code, fn, fn()  # the same call before the lockdown

    probe = run_locked(lambda s: s[2], prepare=prepare, seccomp=False)
    if probe.signal is not None:
        pytest.skip("this kernel has no i386 syscall emulation")
    assert probe.error is None and probe.result > 0  # int 0x80 getpid works without the filter
    out = run_locked(lambda s: s[1](), prepare=prepare)
    assert out.signal == signal.SIGSYS


# ---------------------------------------------------------------------------------------------
# memory and CPU limits


def fill_model() -> bytes:
    """ReduceSum(ConstantOfShape(n, 1.0)): allocates n floats inside ONNX Runtime, returns n."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["n"], ["filled"], value=one),
         helper.make_node("ReduceSum", ["filled"], ["total"], keepdims=0)],
        "fill",
        [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("kind", ["data", "address_space"])
def test_memory_limit_gives_errors_not_crashes(kind: str):
    budget = 256 * MB

    def prepare() -> ort.InferenceSession:
        return ort.InferenceSession(fill_model(), providers=["CPUExecutionProvider"])

    def limit(_) -> dict:
        return {kind: getattr(lockdown.memory_usage(), kind) + budget}

    def check(session: ort.InferenceSession) -> dict:
        def run(n: int) -> float:
            return float(session.run(None, {"n": np.array([n], np.int64)})[0])

        return {
            "numpy_big": attempt(np.empty, 4 << 30, np.uint8),
            "numpy_small": float(np.ones(MB).sum()),
            "numpy_in_budget": float(np.ones(64 * MB // 8).sum()),
            "ort_small": run(1000),
            "ort_big": attempt(run, 1 << 28)[0],  # 1 GB of floats
            "ort_after": run(1000),
            "bytes_big": attempt(bytes, 1 << 30)[0],
        }

    out = run_locked(check, prepare=prepare, options=limit)
    locked(out)
    r = out.result
    assert r["numpy_big"] == ("MemoryError", None)
    assert r["numpy_small"] == MB and r["numpy_in_budget"] == 8 * MB
    assert r["ort_small"] == 1000.0 and r["ort_after"] == 1000.0
    assert r["ort_big"] == "Fail"  # onnxruntime's exception (BFCArena), and the session still works
    assert r["bytes_big"] == "MemoryError"
    assert out.applied[kind] > budget


def test_cpu_limit_moves_after_lockdown_and_kills_with_sigxcpu():
    """apply sets the soft limit; set_cpu_limit / set_cpu_budget move it after the lockdown
    (the filter lets RLIMIT_CPU through, nothing else); past it, SIGXCPU ends the process."""
    report: dict = {}

    def inspect(pid: int) -> None:
        report["limits"] = Path(f"/proc/{pid}/limits").read_text()

    def check(_) -> None:
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        lockdown.set_cpu_limit(0)
        assert resource.getrlimit(resource.RLIMIT_CPU) == (hard, hard)
        lockdown.set_cpu_limit(7000)
        assert resource.getrlimit(resource.RLIMIT_CPU)[0] == 7000
        as_limit = resource.getrlimit(resource.RLIMIT_AS)
        assert attempt(resource.prlimit, 0, resource.RLIMIT_AS, as_limit) == DENIED
        limit = lockdown.set_cpu_budget(1)
        assert resource.getrlimit(resource.RLIMIT_CPU)[0] == limit <= math.ceil(time.process_time()) + 1
        while True:  # burn CPU until the kernel sends SIGXCPU
            pass

    t0 = time.monotonic()
    out = run_locked(check, on_locked=inspect, cpu_seconds=9000, timeout=30)
    assert out.signal == signal.SIGXCPU, out.error  # a failed assert above would report, then exit 0
    assert time.monotonic() - t0 < 10
    assert "Max cpu time              9000" in report["limits"]


def test_set_cpu_limit_checks_its_argument():
    def check(_) -> dict:
        return {"negative": attempt(lockdown.set_cpu_limit, -1), "text": attempt(lockdown.set_cpu_limit, "1")}

    out = run_locked(check)
    locked(out)
    assert out.result == {"negative": ("ValueError", None), "text": ("TypeError", None)}


# ---------------------------------------------------------------------------------------------
# Landlock, the second layer


def test_landlock_alone_denies_files_network_and_signals(tmp_path: Path, victim):
    """With the filter off (seccomp=False) Landlock is what refuses: EACCES for files and TCP,
    EPERM for signals to processes outside the sandbox. stat is not a Landlock right."""
    abi = lockdown.landlock_abi()
    existing = tmp_path / "secret.txt"
    existing.write_text("secret")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def check(_) -> dict:
        return {
            "open": attempt(open, existing),
            "create": attempt(open, tmp_path / "new", "w"),
            "listdir": attempt(os.listdir, tmp_path),
            "unlink": attempt(os.unlink, existing),
            "exec": attempt(os.execv, "/bin/true", ["true"]),
            "stat": attempt(lambda: os.stat(existing).st_size),
            "tcp_connect": attempt(socket.create_connection, ("127.0.0.1", port)),
            "kill_victim": attempt(os.kill, victim.pid, 0),
            "kill_self": attempt(os.kill, os.getpid(), 0),
        }

    try:
        out = run_locked(check, seccomp=False)
    finally:
        listener.close()
    assert out.error is None, out.error
    assert out.applied["seccomp"] == 0 and out.applied["no_new_privs"] is True
    if abi == 0:
        assert out.applied["landlock"] == 0
        pytest.skip("this kernel has no Landlock (reported as landlock=0)")
    assert out.applied["landlock"] == abi
    r = out.result
    for k in ("open", "create", "listdir", "unlink", "exec"):
        assert r[k] == LANDLOCK_DENIED, (k, r[k])
    assert r["stat"] == ("ok", 6)
    if abi >= 4:
        assert r["tcp_connect"] == LANDLOCK_DENIED
    if abi >= 6:
        assert r["kill_victim"] == DENIED
    assert r["kill_self"] == ("ok", None)
    assert existing.read_text() == "secret" and not (tmp_path / "new").exists()


def test_landlock_off_leaves_seccomp_to_refuse(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    out = run_locked(lambda s: attempt(open, tmp_path / "f"), landlock=False)
    locked(out)
    assert out.applied["landlock"] == 0 and out.result == DENIED


@pytest.mark.parametrize("use_seccomp", [True, False])
def test_threads_started_before_lockdown(tmp_path: Path, use_seccomp: bool):
    """The seccomp filter binds every thread (TSYNC); Landlock only the calling thread and the
    threads it starts later, so with the filter off a thread from before can still open files."""
    (tmp_path / "f").write_text("x")

    def prepare() -> dict:
        box: dict = {"go": threading.Event(), "done": threading.Event()}

        def old_thread() -> None:
            box["go"].wait()
            box["open"] = attempt(lambda: open(tmp_path / "f").read())
            box["socket"] = attempt(socket.socket)
            box["done"].set()

        threading.Thread(target=old_thread, daemon=True).start()
        return box

    def check(box: dict) -> dict:
        box["go"].set()
        box["done"].wait(10)
        return {"open": box["open"], "socket": box["socket"][0]}

    out = run_locked(check, prepare=prepare, seccomp=use_seccomp)
    assert out.error is None, out.error
    if use_seccomp:
        assert out.result == {"open": DENIED, "socket": "PermissionError"}
    else:
        assert out.result["open"] == ("ok", "x")  # Landlock has no thread sync on this kernel


# ---------------------------------------------------------------------------------------------
# the worker's workload keeps running


WORKLOAD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {here!r})
    import lockdown_workload as w
    from lockdown_harness import run_locked
    out = run_locked(w.run, prepare=w.prepare, keep=lambda p: (p.channel.fileno(), p.peer.fileno()),
                     cpu_seconds=3600, data=0)
    print(json.dumps({{"applied": out.applied, "result": out.result, "error": out.error,
                      "status": out.status}}))
    """
)


@pytest.mark.parametrize("openblas_threads", [None, "1"])
def test_workload_runs_after_lockdown(openblas_threads: str | None):
    """ORT sessions, numpy (OpenBLAS threaded or not), native ops, the guard, threads, sleep,
    msgpack, the channel, exceptions and gc, in a child of a fresh interpreter (as from the zygote)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if openblas_threads:
        env["OPENBLAS_NUM_THREADS"] = openblas_threads
    proc = subprocess.run([sys.executable, "-c", WORKLOAD.format(here=str(HERE))], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] is None, out["error"]
    assert out["status"] == 0 and out["applied"]["seccomp"] > 0
    r = out["result"]
    x = np.array(r["x"], np.float32)
    np.testing.assert_allclose(r["y"], expected_rank(x), rtol=1e-5)
    assert r["echo"] == {"y": r["y"], "n": 200}
    assert r["matmul_trace"] == pytest.approx(r["a_trace"])
    assert r["big_sum"] == 8 * MB + 2048
    assert r["sorted"] is True
    assert r["hashes"] == ops.hash_strings(["click", "view", "buy"], 1000).tolist()
    assert r["agg_count"] == [10.0, 100.0]
    assert r["tokens"] == ops.tokenize(["red running shoes", "blue hat"], 101)[1].tolist()
    assert r["ids_shape"] == [2, 32] and r["top"] == [1, 2]
    assert r["budget_exceeded"] is False
    assert r["woke"] is True and r["late_thread"] is True
    assert 0.02 <= r["slept"] < 1
    assert r["caught"] == 100 and r["collected"] >= 999

