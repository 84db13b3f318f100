"""Calling into script code: whatever escapes it becomes a typed error with the script's location.

A script error names the bundle's file and line (``features.py:42: KeyError: 'price'``) from the
traceback's frames that belong to the bundle (the code objects' line tables: the source never
ships). The message is copied into an exact ``str`` and the exception object is dropped, so no
script object outlives the call inside an error.
"""
from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from vm.errors import EdgeError, PolicyError, ResourceExhausted, ScriptError
from vm.guard.context import ScriptTimeout
from vm.sandbox.builtins import PolicyViolation

MAX_MESSAGE = 2000


def bundle_frames(tb: types.TracebackType | None, files: frozenset[str]) -> list[tuple[str, int, str]]:
    """(file, line, function) of the traceback's frames that belong to the bundle's scripts."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename in files:
            frames.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    return frames


def call_script(files: frozenset[str], fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, where ``fn`` runs the bundle's scripts (whose files are ``files``); anything it
    raises other than the runtime's own errors and timeout becomes a typed ``EdgeError``."""
    try:
        return fn(*args)
    except ScriptTimeout as exc:
        frames = bundle_frames(exc.__traceback__, files)
        if frames:  # where the deadline stopped the script, for the timeout's message
            exc.script_frame = frames[-1][:2]
        raise
    except EdgeError:
        raise
    except BaseException as exc:  # noqa: BLE001 - everything a script raises becomes a typed error
        raise script_error(exc, files) from None


def script_error(exc: BaseException, files: frozenset[str]) -> EdgeError:
    """The typed error for ``exc`` raised by script code: policy, resource or script."""
    frames = bundle_frames(exc.__traceback__, files)
    where = f"{frames[-1][0]}:{frames[-1][1]}: " if frames else ""
    try:  # an exact str: a str subclass kept in the error would run script code in the host later
        text = "".join((str(exc),))
    except Exception:
        text = "(the exception's message could not be rendered)"
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + "..."
    detail = {"type": type(exc).__name__, "message": text,
              "traceback": [{"file": f, "line": n, "function": fn_} for f, n, fn_ in frames]}
    if frames:
        detail.update(file=frames[-1][0], line=frames[-1][1])
    exc.__traceback__ = None
    if isinstance(exc, PolicyViolation):
        return PolicyError(f"{where}{text}", detail=detail)
    if isinstance(exc, (MemoryError, RecursionError)):
        return ResourceExhausted(f"{where}{type(exc).__name__}: {text}", detail=detail)
    return ScriptError(f"{where}{type(exc).__name__}: {text}", detail=detail)
