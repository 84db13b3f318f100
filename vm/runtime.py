"""``Runtime``: load bundles, run their entries under deadlines, report typed errors.

    rt = Runtime({"keys": "keys/", "deadline_ms": 50})
    rt.load("home.evb")
    rt.infer("home", "rank", {"events": [...], "candidates": [...]})
    rt.close()

Inputs and results cross the boundary as msgpack (the C API's wire format); the Python API packs
and unpacks around the same path, so both see identical values and errors. Script calls run on
worker threads under a watchdog (``vm.executor``); every failure is an ``EdgeError`` with a
stable code.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from vm import _guard, edge_api, keys, loader
from vm.errors import (
    BadInput,
    Closed,
    Downgrade,
    EdgeError,
    Internal,
    NotFound,
    PolicyError,
    ResourceExhausted,
    ScriptError,
)
from vm.executor import WorkerPool
from vm.packer import parse_version
from vm.sandbox import PolicyViolation, Sandbox, bundle_frames, prepare_thread
from vm.watchdog import ScriptTimeout

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
        self._pool = WorkerPool(
            _int_option(config, "workers", 1, 64), grace_s=_int_option(config, "grace_ms", 1, 60_000) / 1000,
            max_stuck=_int_option(config, "max_stuck_workers", 0, 64),
            queue_size=_int_option(config, "queue_size", 1, 1 << 20))
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
        from vm import models

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
    def infer(self, system: str, business: str, inputs: Any, *, deadline_ms: float | None = None) -> Any:
        """Run the entry for ``system``/``business`` on ``inputs`` (msgpack-serialisable data)."""
        try:
            payload = msgpack.packb(inputs, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadInput(f"inputs are not msgpack-serialisable: {exc}") from None
        return msgpack.unpackb(self.infer_msgpack(system, business, payload, deadline_ms=deadline_ms),
                               raw=False, strict_map_key=False)

    def infer_msgpack(self, system: str, business: str, payload: bytes, *,
                      deadline_ms: float | None = None) -> bytes:
        """``infer`` with msgpack bytes in and out (what the C API calls)."""
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
        if not isinstance(budget, (int, float)) or budget <= 0:
            raise BadInput("deadline_ms must be a positive number")
        deadline = time.monotonic() + budget / 1000
        return self._call(_invoke, fn, bytes(payload), deadline=deadline, bundle=loaded.bundle,
                          label=f"{system}/{business}")

    def _call(self, fn: Callable[..., Any], *args: Any, deadline: float, bundle: loader.TrustedBundle,
              label: str) -> Any:
        try:
            return self._pool.call(_in_sandbox, fn, bundle.files, *args, deadline=deadline, label=label,
                                   memory_limit=self.memory_limit or None)
        except EdgeError:
            raise
        except Exception as exc:  # a bug in edgevm, never a script error (those are mapped in the worker)
            raise Internal(f"{label}: {type(exc).__name__}: {exc}") from exc

    def stats(self) -> dict[str, Any]:
        return {"bundles": len(self._bundles), "routes": len(self._routes), **self._pool.stats()}

    def close(self) -> None:
        """Stop serving; pending calls fail with ``Closed``. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._bundles.clear()
            self._routes.clear()
        self._pool.close()

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
