"""What a worker thread does with one script call: a memory budget, the watchdog's deadline, and
every outcome turned into a value.

``execute`` never raises: it returns ``(result, None)`` or ``(None, error)`` where ``error`` is an
``EdgeError`` (a timeout, a memory budget exceeded, or whatever the call raised; anything that is
not an ``EdgeError`` is a bug in edgevm and becomes ``Internal``). The queues, the worker threads,
stuck-worker retirement and the caller-side deadlines live in ``vm.execution.scheduler``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vm.errors import EdgeError, Internal, ResourceExhausted, Timeout
from vm.execution.watchdog import Watchdog
from vm.guard import _guard
from vm.guard.context import ScriptTimeout


def execute(watchdog: Watchdog, deadline: float, fn: Callable[..., Any], args: tuple, *,
            memory_limit: int | None, label: str, guarded: bool = True) -> tuple[Any, EdgeError | None]:
    """Run ``fn(*args)`` on this thread under ``deadline`` and a per-call memory budget; or, not
    ``guarded``, ``fn(deadline, *args)``, which runs its work elsewhere and bounds it itself."""
    limited = memory_limit is not None
    started = time.monotonic()
    exceeded = False
    try:
        if not guarded:
            return fn(deadline, *args), None
        if limited:
            _guard.budget_begin(memory_limit)
        try:
            result = watchdog.run(deadline, fn, *args)
        finally:
            exceeded = _guard.budget_end()[1] if limited else False
        if exceeded:
            return None, ResourceExhausted(f"{label} exceeded its memory budget ({_budget(memory_limit)})")
        return result, None
    except ScriptTimeout as exc:
        frame = getattr(exc, "script_frame", None)  # (file, line), noted by vm.sandbox.report.call_script
        stop = f"; stopped at {frame[0]}:{frame[1]}" if frame else ""
        return None, Timeout(f"{label} did not finish before its deadline (it had "
                             f"{(deadline - started) * 1000:.0f} ms{stop})",
                             detail={"file": frame[0], "line": frame[1]} if frame else None)
    except MemoryError:
        return None, ResourceExhausted(f"{label} ran out of memory ({_budget(memory_limit)})")
    except ResourceExhausted as exc:
        text = exc.message.rstrip()
        sep = " " if text.endswith(":") else "; "
        if exceeded:
            return None, ResourceExhausted(f"{text}{sep}{label} exceeded its memory budget ({_budget(memory_limit)})",
                                           detail=exc.detail)
        if guarded and exc.detail.get("type") == "MemoryError":
            return None, ResourceExhausted(f"{text}{sep}out of memory ({_budget(memory_limit)})", detail=exc.detail)
        return None, exc
    except EdgeError as exc:
        return None, exc
    except BaseException as exc:  # noqa: BLE001 - a bug in edgevm; the caller still gets a typed error
        err = Internal(f"{label}: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return None, err


def _budget(memory_limit: int | None) -> str:
    """The per-call memory budget in words, for error messages."""
    if memory_limit is None:
        return "memory_guard is off: no per-call budget"
    return f"the per-call budget is memory_limit_mb = {memory_limit / (1 << 20):g}"
