"""The ``edge`` module: the runtime API a bundle's scripts import.

Each loaded bundle gets its own module object holding only vetted members: logging, clocks, the
call's remaining time, the native operators (``edge.ops``, loaded on first use), the bundle's
models (``edge.model(name)``), the feature snapshots it declares (``edge.features.get(name)``) and
the event store (``edge.events``: query, sql, append; served by the host through a backend
callable: ``vm.data`` in thread mode, the worker's channel in process mode). Nothing here hands a
script a reference to the runtime's own objects: models are reached through a facade that exposes
``run``, ``inputs`` and ``outputs``; snapshots are read-only data.
"""
from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

from vm.errors import NotFound
from vm.guard import context
from vm.sandbox.builtins import PolicyViolation

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


_pinned = threading.local()


def pin(view: Mapping[str, Any] | None) -> None:
    """Make ``view`` (snapshot name -> ``vm.bundle.snapshot.Snapshot``) the snapshots that calls on
    this thread read, until the next ``pin``: a call pins the runtime's current view once, when it
    starts, so it never sees two versions of one snapshot however many swaps happen meanwhile."""
    _pinned.view = view


def _features_module(bundle_name: str, declared: tuple[str, ...]) -> types.ModuleType:
    module = types.ModuleType("edge.features")
    allowed = frozenset(declared)

    def _snapshot(name: str) -> Any:
        if type(name) is not str:
            raise TypeError(f"a snapshot name is a str, not {type(name).__name__}")
        if name not in allowed:
            raise PolicyViolation(f"bundle {bundle_name} does not declare snapshot {name!r} in its bundle.json "
                                  f"'snapshots' (declared: {', '.join(declared) or 'none'})")
        snap = (getattr(_pinned, "view", None) or {}).get(name)
        if snap is None:
            raise LookupError(f"snapshot {name!r} has not reached this device yet")
        return snap

    def get(name: str) -> Any:
        """The data of snapshot ``name``: a read-only mapping of column name to read-only numpy
        array, or a read-only dict; the same objects for every call of one version (never copied)."""
        return _snapshot(name).data

    def version(name: str) -> str:
        """The version of snapshot ``name`` this call reads."""
        return _snapshot(name).version

    def available() -> tuple[str, ...]:
        """The declared snapshots this call can read."""
        view = getattr(_pinned, "view", None) or {}
        return tuple(n for n in declared if n in view)

    module.__dict__.update({"get": get, "version": version, "available": available, "declared": declared})
    return module


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


EventsBackend = Callable[[str, list], Any]
"""``backend(op, args)``: the host's answer to an ``edge.events`` call (``query``, ``sql``, ``append``)."""


def _events_module(backend: EventsBackend) -> types.ModuleType:
    module = types.ModuleType("edge.events")

    def query(table: str, since_ms: int | None = None, until_ms: int | None = None, where: dict | None = None,
              fields: list | None = None, limit: int | None = None) -> dict:
        """The events of ``table`` with ``since_ms <= ts < until_ms`` whose fields equal ``where``'s
        values (a value or a list of allowed values), oldest first (by ts), at most the latest ``limit``:
        ``{field: numpy array}`` for ``fields`` (default: ts and every field). Served from the
        in-memory ring when it holds the whole window."""
        return backend("query", [table, {"since_ms": since_ms, "until_ms": until_ms, "where": where,
                                         "fields": fields, "limit": limit}])

    def sql(statement: str, params: list | tuple = (), limit: int | None = None) -> dict:
        """One read-only, parameterised SELECT over the tables this bundle reads (their clear
        columns): ``{column: numpy array}``; more than ``limit`` rows is a ``resource`` error."""
        return backend("sql", [statement, list(params) if type(params) in (list, tuple) else params, limit])

    def append(table: str, event: dict) -> None:
        """Store ``event`` in one of this bundle's own tables."""
        backend("append", [table, event])

    module.__dict__.update({"query": query, "sql": sql, "append": append})
    return module


def _no_events(op: str, args: list) -> Any:
    raise NotFound("no event store is configured (config 'data')")


def build(*, bundle_name: str, bundle_version: str, sessions: dict[str, Any],
          log: Callable[[str], None], events: EventsBackend | None = None,
          snapshots: tuple[str, ...] = (), ab_group: str | None = None) -> types.ModuleType:
    """A fresh ``edge`` module for one bundle; ``events`` serves its ``edge.events`` calls
    (``snapshots``: the feature snapshots its manifest declares; ``ab_group``: this device's A/B
    group for it)."""
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
        "events": _events_module(events or _no_events),
        "features": _features_module(bundle_name, snapshots), "ab_group": ab_group_, "__getattr__": lazy,
    })
    return module
