"""The worker's lockdown (Linux): typed access to ``vm.isolation._lockdown`` (native/sandbox/).

A worker calls ``apply`` once, after its bundle is loaded and its model sessions exist, and from then
on only computes: every fd but ``keep_fds`` is closed, the environment is empty, no new privileges,
Landlock denies all file access (where the kernel has it), rlimits bound core files, fds, memory and
CPU, and a seccomp-BPF allowlist refuses everything else (open, exec, fork, socket, connect, ptrace,
kill of other processes, ...) with EPERM, which Python code sees as ``PermissionError``. Nothing can
be imported after it (imports open files): the zygote imports what workers use, ``numpy.random``
included (numpy imports it lazily). Memory limits are absolute; ``memory_usage`` gives the process's
usage to add a budget to, read before the lockdown (``/proc`` is closed afterwards).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import NamedTuple, TypedDict

from vm.isolation import _lockdown


class Applied(TypedDict):
    """What ``apply`` did (limits in bytes and seconds; 0 = left as it was)."""

    kept_fds: tuple[int, ...]
    nofile: int
    address_space: int
    data: int
    cpu_seconds: int
    no_new_privs: bool
    landlock: int  # the Landlock ABI enforced, 0 = none
    seccomp: int  # the filter's length in BPF instructions, 0 = none
    arch: str


class MemoryUsage(NamedTuple):
    """The process's memory now, in bytes: what RLIMIT_AS and RLIMIT_DATA count."""

    address_space: int  # VmSize
    data: int  # VmData: private writable mappings (heap, anonymous mmaps, thread stacks)


def memory_usage() -> MemoryUsage:
    """VmSize and VmData of this process (from /proc/self/status: call it before ``apply``)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmSize", "VmData"):
                fields[key] = int(value.split()[0]) * 1024
    return MemoryUsage(fields["VmSize"], fields["VmData"])


def apply(
    keep_fds: Iterable[int],
    *,
    address_space: int = 0,
    data: int = 0,
    cpu_seconds: int = 0,
    landlock: bool = True,
    seccomp: bool = True,
) -> Applied:
    """Lock this process down for good; once per process (a second call raises RuntimeError).

    ``address_space``/``data``: RLIMIT_AS/RLIMIT_DATA in bytes (e.g. ``memory_usage().data +
    budget``); ``cpu_seconds``: RLIMIT_CPU soft limit in seconds of process CPU time (SIGXCPU past
    it); 0 leaves a limit as it is. ``seccomp=False`` is for diagnosis only. Bad arguments raise
    ValueError/TypeError before anything changes; any error after that means the process is
    partly locked down and must exit.
    """
    return _lockdown.apply(tuple(keep_fds), address_space, data, cpu_seconds, landlock, seccomp)


def set_cpu_limit(soft_seconds: int) -> None:
    """RLIMIT_CPU soft limit, in seconds of process CPU time (0 = the hard limit); works after ``apply``."""
    _lockdown.set_cpu_limit(soft_seconds)


def set_cpu_budget(seconds: float) -> int:
    """The CPU backstop for one call: soft limit = CPU used so far + ``seconds``, rounded up; returns it."""
    limit = math.ceil(time.process_time() + seconds)
    _lockdown.set_cpu_limit(limit)
    return limit


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 if it has none."""
    return _lockdown.landlock_abi()


def die_with_parent() -> None:
    """Be killed (SIGKILL) when the parent process (the zygote) exits: no worker outlives it."""
    _lockdown.die_with_parent()
