"""The worker's lockdown (C: native/sandbox/, ``vm.isolation._lockdown``), with its limits given
relative to what the worker holds when it locks itself down.

After ``apply`` a worker has no fd but its channel, an empty environment, no core files, a data
limit of its current size plus its budget, a CPU-time backstop, no new privileges, Landlock (where
the kernel has it) and a seccomp-BPF allowlist: opening files, exec, fork, sockets, ptrace and
signals to other processes fail with EPERM/EACCES, which script code sees as an ordinary error.
"""
from __future__ import annotations

import os
from typing import Any

from vm.isolation import _lockdown


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def apply(*, keep_fds: tuple[int, ...], data_budget: int, cpu_seconds: int) -> dict[str, Any]:
    """Lock this process down for good; ``data_budget`` bytes of data beyond its size now (0: no
    limit), ``cpu_seconds`` of CPU time before SIGXCPU (0: none; ``set_cpu_limit`` moves it)."""
    data = _status_kb("VmData") * 1024 + data_budget if data_budget else 0
    applied = _lockdown.apply(keep_fds, data=data, cpu_seconds=cpu_seconds)
    os.environ.clear()
    return dict(applied)


def set_cpu_limit(soft_seconds: int) -> None:
    """Move the CPU-time backstop (seconds of this process's CPU time)."""
    _lockdown.set_cpu_limit(soft_seconds)


def die_with_parent() -> None:
    """Be killed (SIGKILL) when the parent (the zygote) exits."""
    _lockdown.die_with_parent()
