"""The ``edge`` module: the runtime API a bundle's scripts import.

Each loaded bundle gets its own module object holding only vetted members: logging, clocks, the
call's remaining time, the native operators (``edge.ops``, loaded on first use) and the bundle's
models (``edge.model(name)``). Nothing here hands a script a reference to the runtime's own
objects: models are reached through a facade that exposes ``run``, ``inputs`` and ``outputs``.
"""
from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any

from vm.guard import context

OPS_PUBLIC_EXCLUDE = frozenset({"ffi", "lib", "np", "numpy"})


class Model:
    """What a script sees of a model shipped in its bundle."""

    __slots__ = ("_session",)

    def __init__(self, session: Any) -> None:
        self._session = session

    name = property(lambda self: self._session.name)
    inputs = property(lambda self: self._session.signature()["inputs"], doc="[{name, type, dtype, shape}]")
    outputs = property(lambda self: self._session.signature()["outputs"], doc="[{name, type, dtype, shape}]")

    def run(self, feeds: dict, outputs: list | None = None) -> dict:
        """Run the model; ``feeds`` maps input names to numpy arrays."""
        return self._session.run(feeds, outputs)

    def __repr__(self) -> str:
        return f"<model {self._session.name!r}>"


def preload() -> None:
    """Import what ``edge.ops`` is built from (numpy, the native operators' library), so that a
    script's first ``edge.ops`` costs a dictionary, not the imports (about 10 ms, in a caller's call)."""
    from vm.ml import ops

    ops._lib  # noqa: B018 - load the native operators' library now


def _ops_module() -> types.ModuleType:
    import stdlib_slim
    from vm.guard import _guard
    from vm.ml import ops

    _guard.numpy_install()

    public = getattr(ops, "__all__", None) or [n for n in vars(ops) if not n.startswith("_")]
    module = types.ModuleType("edge.ops")
    for name in public:
        if name not in OPS_PUBLIC_EXCLUDE and not name.startswith("_"):
            module.__dict__[name] = getattr(ops, name)
    stdlib_slim.freeze_classes(module.__dict__)
    return module


def build(*, bundle_name: str, bundle_version: str, sessions: dict[str, Any],
          log: Callable[[str], None], ab_group: str | None = None) -> types.ModuleType:
    """A fresh ``edge`` module for one bundle (``ab_group``: this device's A/B group for it)."""
    module = types.ModuleType("edge")
    models = {name: Model(s) for name, s in sessions.items()}

    def model(name: str) -> Model:
        """The model ``name`` shipped in this bundle."""
        found = models.get(name)
        if found is None:
            raise LookupError(f"no model named {name!r} in bundle {bundle_name} "
                              f"(models: {', '.join(sorted(models)) or 'none'})")
        return found

    def remaining_ms() -> float:
        """Milliseconds left before this call's deadline."""
        ctx = context.current()
        return ctx.remaining() * 1000.0 if ctx is not None else float("inf")

    def now_ms() -> int:
        """Wall-clock time in milliseconds since the epoch."""
        return time.time_ns() // 1_000_000

    def log_(*args: Any) -> None:
        """Write a line to the runtime's log for this bundle."""
        log(" ".join(str(a) for a in args))

    def ab_group_() -> str | None:
        """This device's A/B group for this bundle version (None: it is not in an A/B test)."""
        return ab_group

    def lazy(name: str) -> Any:
        if name == "ops":
            ops = _ops_module()
            module.__dict__["ops"] = ops
            return ops
        raise AttributeError(f"module 'edge' has no attribute {name!r}")

    module.__dict__.update({
        "bundle_name": bundle_name, "bundle_version": bundle_version, "model": model,
        "models": tuple(sorted(models)), "remaining_ms": remaining_ms, "now_ms": now_ms, "log": log_,
        "ab_group": ab_group_, "__getattr__": lazy,
    })
    return module
