"""``Runtime``: load bundles, run their entries under deadlines, report typed errors.

    rt = Runtime({"keys": "keys/", "deadline_ms": 50})
    rt.load("home.evb")
    rt.infer("home", "rank", {"events": [...], "candidates": [...]})
    rt.close()

Inputs and results cross the boundary as msgpack (the C API's wire format); the Python API packs
and unpacks around the same path, so both see identical values and errors. Every call is a task
on one of three priority queues (``vm.execution.scheduler``: deadlines, circuit breakers, metrics); tracked
events start the tasks a bundle's triggers configure (``vm.bundle.triggers``, docs/scheduler.md). Every
failure is an ``EdgeError`` with a stable code.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from vm.bundle import keys, loader, triggers
from vm.bundle.versions import parse_version
from vm.errors import (
    BadInput,
    Busy,
    CircuitOpen,
    Closed,
    Downgrade,
    EdgeError,
    NotFound,
    PolicyError,
    ResourceExhausted,
    ScriptError,
)
from vm.execution.breaker import BreakerConfig, Breakers
from vm.execution.scheduler import CORE, Scheduler, Task
from vm.guard import _guard
from vm.guard.context import ScriptTimeout
from vm.sandbox import edge as edge_api
from vm.sandbox.sandbox import PolicyViolation, Sandbox, bundle_frames, prepare_thread

log = logging.getLogger("edgevm")

DEFAULTS: dict[str, Any] = {
    "deadline_ms": 50,
    "load_deadline_ms": 5000,
    "workers": 2,
    "memory_limit_mb": 256,
    "max_bundle_bytes": 64 << 20,
    "max_input_bytes": 16 << 20,
    "grace_ms": 50,
    "max_stuck_workers": 4,
    "queue_size": 1024,
    "normal_workers": 1,
    "low_workers": 1,
    "breaker_failures": 5,
    "breaker_cooldown_ms": 30_000,
    "breaker_probes": 1,
    "starvation_yields": 8,
    "yield_ms": 5,
    "gil_slice_us": 0,
    "calc_store_size": 256,
    "close_timeout_ms": 1000,
    "allow_downgrade": False,
    "memory_guard": True,
}
MAX_MESSAGE = 2000


def _int_option(config: dict, name: str, lo: int, hi: int) -> int:
    value = config.get(name, DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadInput(f"config {name!r} must be a number in [{lo}, {hi}], got {value!r}")
    return int(value)


def _memory_guard_supported() -> bool:
    # The allocator hook measures blocks with malloc_usable_size(); the debug allocator wraps them.
    return os.environ.get("PYTHONMALLOC", "") in ("", "malloc", "pymalloc") and not hasattr(
        __import__("sys"), "gettotalrefcount")


@dataclass
class _Loaded:
    bundle: loader.TrustedBundle
    sandbox: Sandbox
    entries: dict[str, Callable[..., Any]]
    sessions: dict[str, Any]
    routes: list[tuple[str, str]] = field(default_factory=list)


class Runtime:
    """An edgevm runtime: thread-safe; every method may be called from any thread."""

    def __init__(self, config: dict | None = None) -> None:
        config = dict(config or {})
        unknown = set(config) - set(DEFAULTS) - {"keys", "device_profile", "data_dir", "log"}
        if unknown:
            raise BadInput(f"unknown config option(s): {', '.join(sorted(unknown))}")
        if "keys" not in config:
            raise BadInput("config needs 'keys': a keygen directory, a device.json path, bytes or a dict")
        self._keys = keys.load_device(config["keys"])
        self.deadline_ms = _int_option(config, "deadline_ms", 1, 3_600_000)
        self.load_deadline_ms = _int_option(config, "load_deadline_ms", 1, 3_600_000)
        self.memory_limit = _int_option(config, "memory_limit_mb", 1, 1 << 20) << 20
        self.max_bundle_bytes = _int_option(config, "max_bundle_bytes", 1024, 1 << 34)
        self.max_input_bytes = _int_option(config, "max_input_bytes", 16, 1 << 32)
        self.allow_downgrade = bool(config.get("allow_downgrade", False))
        self.data_dir = config.get("data_dir")
        self._profile_config = config.get("device_profile")
        self._script_log: Callable[[str, str], None] = config.get("log") or (
            lambda bundle, line: logging.getLogger(f"edgevm.script.{bundle}").info("%s", line))
        if config.get("memory_guard", True) and _memory_guard_supported():
            _guard.memory_install()
        else:
            self.memory_limit = 0
        yield_ms = _int_option(config, "yield_ms", 0, 60_000)
        gil_slice_us = _int_option(config, "gil_slice_us", -1, 10_000_000)
        self._sched = Scheduler(
            workers=(_int_option(config, "workers", 1, 64), _int_option(config, "normal_workers", 1, 64),
                     _int_option(config, "low_workers", 1, 64)),
            queue_size=_int_option(config, "queue_size", 1, 1 << 20),
            grace_s=_int_option(config, "grace_ms", 1, 60_000) / 1000,
            max_stuck=_int_option(config, "max_stuck_workers", 0, 64),
            breakers=Breakers(BreakerConfig(
                failures=_int_option(config, "breaker_failures", 1, 1 << 30),
                cooldown_s=_int_option(config, "breaker_cooldown_ms", 0, 86_400_000) / 1000,
                probes=_int_option(config, "breaker_probes", 1, 1 << 20))),
            starvation_yields=_int_option(config, "starvation_yields", 1, 1 << 20),
            yield_s=yield_ms / 1000, yield_to_higher=yield_ms > 0,
            gil_slice_s=None if gil_slice_us < 0 else gil_slice_us / 1e6)
        self._close_timeout = _int_option(config, "close_timeout_ms", 0, 600_000) / 1000
        self._kept_max = _int_option(config, "calc_store_size", 1, 1 << 20)
        self._kept: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._kept_lock = threading.Lock()
        self._listener: Callable[[dict[str, Any]], None] | None = None
        self._trigger_cache: tuple[tuple[_Loaded, ...], triggers.TriggerIndex,
                                   dict[str, tuple[_Loaded, triggers.BundleTriggers]]] | None = None
        self._trigger_errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._bundles: dict[str, _Loaded] = {}
        self._routes: dict[tuple[str, str], tuple[_Loaded, Callable[..., Any]]] = {}
        self._closed = False

    # -- loading -----------------------------------------------------------------------------
    def load(self, source: str | os.PathLike | bytes, *, allow_downgrade: bool | None = None) -> dict[str, Any]:
        """Verify, decrypt, gate and load a bundle (a path or its bytes); its entries replace
        those of an older version of the same bundle atomically."""
        self._check_open()
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise NotFound(f"bundle file {path} not found") from None
            if size > self.max_bundle_bytes:
                raise BadInput(f"bundle of {size} bytes exceeds the limit of {self.max_bundle_bytes} bytes")
            data = path.read_bytes()
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        else:
            raise BadInput(f"load() takes a path or bytes, not {type(source).__name__}")
        bundle = loader.open_bundle(data, self._keys, max_size=self.max_bundle_bytes)
        self._check_version(bundle, self.allow_downgrade if allow_downgrade is None else allow_downgrade)
        triggers.parse_bundle(bundle.manifest, bundle.manifest["entries"])  # a bad configuration fails the load
        sessions = self._load_models(bundle)
        name = bundle.name
        sandbox = Sandbox(
            bundle.codes, bundle.packages,
            edge=lambda: edge_api.build(bundle_name=name, bundle_version=bundle.version, sessions=sessions,
                                        log=lambda line: self._script_log(name, line)),
            log=lambda line: self._script_log(name, line))
        manifest = bundle.manifest
        entries: dict[str, Callable[..., Any]] = {}
        deadline = time.monotonic() + self.load_deadline_ms / 1000
        for business, spec in manifest["entries"].items():
            entries[str(business)] = self._call(sandbox.entry, spec, deadline=deadline, bundle=bundle,
                                                label=f"loading {name} ({spec})")
        loaded = _Loaded(bundle=bundle, sandbox=sandbox, entries=entries, sessions=sessions)
        system = str(manifest["system"])
        with self._lock:
            self._check_open()
            for business in entries:
                owner = self._routes.get((system, business))
                if owner is not None and owner[0].bundle.name != name:
                    raise BadInput(f"{system}/{business} is already served by bundle {owner[0].bundle.name}")
            old = self._bundles.get(name)
            if old is not None:
                for route in old.routes:
                    self._routes.pop(route, None)
            for business, fn in entries.items():
                self._routes[(system, business)] = (loaded, fn)
                loaded.routes.append((system, business))
            self._bundles[name] = loaded
        log.info("loaded bundle %s %s (%d modules, %d models)", name, bundle.version, len(bundle.codes),
                 len(sessions))
        return self._info(loaded)

    def _check_version(self, bundle: loader.TrustedBundle, allow_downgrade: bool) -> None:
        with self._lock:
            current = self._bundles.get(bundle.name)
        if current is None or allow_downgrade:
            return
        if parse_version(bundle.version) < parse_version(current.bundle.version):
            raise Downgrade(f"bundle {bundle.name} {bundle.version} is older than the loaded "
                            f"{current.bundle.version}; refusing to downgrade")

    def _load_models(self, bundle: loader.TrustedBundle) -> dict[str, Any]:
        if not bundle.models:
            return {}
        from vm.ml import models

        profile = models.DeviceProfile.from_config(self._profile_config)
        return models.load_models(bundle.models, profile)

    def unload(self, name: str) -> None:
        """Remove a bundle and its routes."""
        with self._lock:
            loaded = self._bundles.pop(name, None)
            if loaded is None:
                raise NotFound(f"no bundle named {name!r} is loaded")
            for route in loaded.routes:
                self._routes.pop(route, None)

    def bundles(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._info(b) for b in self._bundles.values()]

    @staticmethod
    def _info(loaded: _Loaded) -> dict[str, Any]:
        b = loaded.bundle
        return {"name": b.name, "version": b.version, "system": b.manifest["system"],
                "entries": sorted(loaded.entries), "models": sorted(loaded.sessions),
                "modules": sorted(b.codes), "sign_key_id": b.header.sign_key_id}

    # -- running -----------------------------------------------------------------------------
    def infer(self, system: str, business: str, inputs: Any, *, deadline_ms: float | None = None,
              priority: str | int = "core") -> Any:
        """Run the entry for ``system``/``business`` on ``inputs`` (msgpack-serialisable data)."""
        try:
            payload = msgpack.packb(inputs, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadInput(f"inputs are not msgpack-serialisable: {exc}") from None
        return msgpack.unpackb(self.infer_msgpack(system, business, payload, deadline_ms=deadline_ms,
                                                  priority=priority),
                               raw=False, strict_map_key=False)

    def infer_msgpack(self, system: str, business: str, payload: bytes, *,
                      deadline_ms: float | None = None, priority: str | int = "core") -> bytes:
        """``infer`` with msgpack bytes in and out (what the C API calls): a task on the
        ``priority`` queue that this thread waits for, at most until the deadline."""
        return self._sched.call(self._infer_task(system, business, payload, deadline_ms, priority))

    def infer_async(self, system: str, business: str, payload: bytes, callback: Callable[[int, bytes], None], *,
                    priority: str | int = "normal", deadline_ms: float | None = None) -> int:
        """Queue an inference; return its task id. ``callback(status, data)`` runs exactly once on a
        runtime thread: status 0 with the result msgpack, or the error code with the UTF-8 message.
        A refusal (``Busy``, ``CircuitOpen``, ``Closed``, ``NotFound``, ``BadInput``) is raised here
        instead, and then the callback never runs."""
        if not callable(callback):
            raise BadInput("callback must be callable")
        task = self._infer_task(system, business, payload, deadline_ms, priority)
        task.on_done = lambda t: callback(*_outcome(t))
        return self._sched.submit(task)[0]

    def _infer_task(self, system: str, business: str, payload: bytes, deadline_ms: float | None,
                    priority: str | int) -> Task:
        self._check_open()
        if not isinstance(system, str) or not isinstance(business, str):
            raise BadInput("system and business codes must be strings")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise BadInput("inputs must be msgpack bytes")
        if len(payload) > self.max_input_bytes:
            raise BadInput(f"inputs of {len(payload)} bytes exceed the limit of {self.max_input_bytes}")
        route = self._routes.get((system, business))
        if route is None:
            raise NotFound(f"no entry for system {system!r}, business {business!r}")
        loaded, fn = route
        budget = self.deadline_ms if deadline_ms is None else deadline_ms
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
            raise BadInput("deadline_ms must be a positive number")
        prio = triggers.parse_priority(priority)
        b = loaded.bundle
        label = f"{system}/{business}"
        return Task(_in_sandbox, _invoke, b.files, fn, bytes(payload), kind="infer", entry=label, label=label,
                    priority=prio, budget_s=budget / 1000, memory_limit=self.memory_limit or None,
                    breaker=self._sched.breakers.get(b.name, business, b.version))

    def _call(self, fn: Callable[..., Any], *args: Any, deadline: float, bundle: loader.TrustedBundle,
              label: str) -> Any:
        return self._sched.call(Task(_in_sandbox, fn, bundle.files, *args, kind="load", entry=bundle.name,
                                     label=label, priority=CORE, deadline=deadline,
                                     memory_limit=self.memory_limit or None))

    # -- event triggers ----------------------------------------------------------------------
    def set_listener(self, callback: Callable[[dict[str, Any]], None] | None) -> None:
        """Receive the results of event-triggered tasks (``None`` stops it): a dict with task_id,
        task_name, kind, bundle, system, business, status, result (msgpack bytes) and error."""
        if callback is not None and not callable(callback):
            raise BadInput("listener must be callable or None")
        self._listener = callback

    def track_msgpack(self, payload: bytes) -> list[int]:
        """``track`` with the event as msgpack bytes (what the C API calls)."""
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise BadInput("the event must be msgpack bytes")
        if len(payload) > self.max_input_bytes:
            raise BadInput(f"event of {len(payload)} bytes exceeds the limit of {self.max_input_bytes}")
        try:
            event = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise BadInput(f"the event is not valid msgpack ({type(exc).__name__})") from None
        return self.track(event)

    def track(self, event: dict[str, Any]) -> list[int]:
        """Match a tracked event against every loaded bundle's triggers and start the configured
        tasks (with the chains they run after); return the ids of the tasks created. A chain that
        the queues or a breaker refuse is counted and skipped."""
        self._check_open()
        if not isinstance(event, dict):
            raise BadInput(f"an event must be a dict, not {type(event).__name__}")
        index, configs = self._triggers()
        matches = index.match(event)
        if not matches:
            return []
        try:
            payload = msgpack.packb(event, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadInput(f"the event is not msgpack-serialisable: {exc}") from None
        if len(payload) > self.max_input_bytes:
            raise BadInput(f"event of {len(payload)} bytes exceeds the limit of {self.max_input_bytes}")
        ids: list[int] = []
        for bundle_name, task_name in matches:
            loaded, cfg = configs[bundle_name]
            try:
                ids += self._submit_chain(loaded, cfg, task_name, payload)
            except (Busy, CircuitOpen) as exc:
                log.info("event on page %s: task %s of %s refused: %s", event.get("pageId"), task_name,
                         bundle_name, exc)
            except Closed:
                if not ids:
                    raise
                break
        return ids

    def _triggers(self) -> tuple[triggers.TriggerIndex, dict[str, tuple[_Loaded, triggers.BundleTriggers]]]:
        with self._lock:
            current = tuple(self._bundles.values())
        cache = self._trigger_cache
        if cache is not None and len(cache[0]) == len(current) and all(
                a is b for a, b in zip(cache[0], current, strict=True)):
            return cache[1], cache[2]
        configs: dict[str, tuple[_Loaded, triggers.BundleTriggers]] = {}
        errors: dict[str, str] = {}
        for loaded in current:
            name = loaded.bundle.name
            try:
                configs[name] = (loaded, triggers.parse_bundle(loaded.bundle.manifest, loaded.entries))
            except BadInput as exc:
                errors[name] = str(exc)
                if self._trigger_errors.get(name) != str(exc):
                    log.error("bundle %s: triggers ignored: %s", name, exc)
        index = triggers.TriggerIndex((n, c) for n, (_, c) in configs.items())
        self._trigger_errors = errors
        self._trigger_cache = (current, index, configs)
        return index, configs

    def _submit_chain(self, loaded: _Loaded, cfg: triggers.BundleTriggers, root: str, payload: bytes) -> list[int]:
        b = loaded.bundle
        system = str(b.manifest["system"])
        with self._kept_lock:
            kept = dict(self._kept)
        tasks: dict[str, Task] = {}
        total_ms = 0.0
        specs = cfg.chain(root)
        for spec in specs:
            budget_ms = spec.deadline_ms or (self.load_deadline_ms if spec.kind == "preload" else self.deadline_ms)
            total_ms += budget_ms
            info = {"task_name": spec.name, "kind": spec.kind, "bundle": b.name, "system": system,
                    "business": spec.business}
            common: dict[str, Any] = dict(
                kind=spec.kind, name=spec.name, label=f"{b.name}:{spec.name}", priority=spec.queue,
                budget_s=budget_ms / 1000, memory_limit=self.memory_limit or None,
                deps=[tasks[d] for d in spec.after], on_done=self._event_done, info=info)
            if spec.business is None:
                tasks[spec.name] = Task(_warm_models, loaded.sessions, entry=f"{b.name}:models", **common)
                continue
            used = tuple((u, kept[(b.name, u)]) for u in spec.uses if (b.name, u) in kept)
            tasks[spec.name] = Task(
                _in_sandbox, _run_step, b.files, loaded.entries[spec.business], payload, common["deps"], used,
                entry=f"{system}/{spec.business}", breaker=self._sched.breakers.get(b.name, spec.business, b.version),
                **common)
        chain_ms = specs[-1].chain_deadline_ms or total_ms
        return self._sched.submit(list(tasks.values()), chain_deadline=time.monotonic() + chain_ms / 1000)

    def _event_done(self, t: Task) -> None:
        info = t.info
        if t.error is None and info["kind"] == "calc":
            with self._kept_lock:
                key = (info["bundle"], info["task_name"])
                self._kept[key] = t.result
                self._kept.move_to_end(key)
                while len(self._kept) > self._kept_max:
                    self._kept.popitem(last=False)
        listener = self._listener
        if listener is not None:
            listener({"task_id": t.id, **info, "status": t.status,
                      "result": t.result if t.error is None else None,
                      "error": None if t.error is None else str(t.error)})

    def metrics(self) -> dict[str, Any]:
        """Counters and latency percentiles per task kind and entry, queue state, circuit breakers
        and trigger config errors, as plain (msgpack-able) data."""
        cache = self._trigger_cache
        snap = self._sched.snapshot()
        snap["triggers"] = {"rules": cache[1].rules if cache else 0, "errors": dict(self._trigger_errors)}
        snap["kept_features"] = len(self._kept)
        return snap

    def stats(self) -> dict[str, Any]:
        return {"bundles": len(self._bundles), "routes": len(self._routes), **self._sched.stats()}

    def close(self) -> None:
        """Stop serving; pending calls fail with ``Closed``. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._bundles.clear()
            self._routes.clear()
        self._sched.close(self._close_timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the runtime is closed")

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- what runs on the worker thread --------------------------------------------------------------

def _invoke(fn: Callable[..., Any], payload: bytes) -> bytes:
    try:
        inputs = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise BadInput(f"inputs are not valid msgpack ({type(exc).__name__})") from None
    result = fn(inputs)
    try:
        return msgpack.packb(result, use_bin_type=True, default=_to_plain)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ScriptError(f"the entry returned a value that cannot be serialised: {exc}") from None


def _run_step(fn: Callable[..., Any], payload: bytes, deps: list[Task], kept: tuple[tuple[str, bytes], ...]) -> bytes:
    """An event-triggered step: the event's fields as inputs, plus ``inputs["features"]`` holding the
    results of the calc tasks it runs after (this chain's) or uses (the latest kept)."""
    inputs = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    if deps or kept:
        features = {name: msgpack.unpackb(data, raw=False, strict_map_key=False) for name, data in kept}
        for d in deps:
            features[d.name] = msgpack.unpackb(d.result, raw=False, strict_map_key=False)
        inputs["features"] = features
    result = fn(inputs)
    try:
        return msgpack.packb(result, use_bin_type=True, default=_to_plain)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ScriptError(f"the entry returned a value that cannot be serialised: {exc}") from None


def _warm_models(sessions: dict[str, Any]) -> bytes:
    """PreloadTask: run every model once on zeros so that its first real run is fast."""
    import numpy as np

    warmed: list[str] = []
    skipped: dict[str, str] = {}
    for name, session in sessions.items():
        try:
            warm = getattr(session, "warm", None)
            if callable(warm):
                warm()
            else:
                feeds = {}
                for spec in session.inputs:
                    dtype = spec.dtype
                    if dtype is None or dtype == np.dtype(object):
                        raise TypeError(f"input {spec.name!r} is not numeric")
                    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec.shape or ())
                    feeds[spec.name] = np.zeros(shape, dtype=dtype)
                session.run(feeds)
            warmed.append(name)
        except (TypeError, ValueError, RuntimeError) as exc:
            skipped[name] = str(exc)
    return msgpack.packb({"warmed": warmed, "skipped": skipped}, use_bin_type=True)


def _outcome(t: Task) -> tuple[int, bytes]:
    """(status, data) for an ``infer_async`` callback."""
    if t.error is None:
        return 0, t.result
    return t.error.code, str(t.error).encode("utf-8", "replace")


def _to_plain(value: Any) -> Any:
    tolist = getattr(type(value), "tolist", None)  # numpy arrays and scalars
    if tolist is not None and type(value).__module__ == "numpy":
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot serialise object of type {type(value).__name__}")


def _in_sandbox(fn: Callable[..., Any], files: frozenset[str], *args: Any) -> Any:
    """Call into script code; turn whatever escapes into a typed error with the script's location."""
    prepare_thread()
    try:
        return fn(*args)
    except (ScriptTimeout, EdgeError):
        raise
    except BaseException as exc:  # noqa: BLE001 - everything a script raises becomes a typed error
        frames = bundle_frames(exc.__traceback__, set(files))
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
            raise PolicyError(f"{where}{text}", detail=detail) from None
        if isinstance(exc, (MemoryError, RecursionError)):
            raise ResourceExhausted(f"{where}{type(exc).__name__}: {text}", detail=detail) from None
        raise ScriptError(f"{where}{type(exc).__name__}: {text}", detail=detail) from None
