"""The runtime configuration: every option once, with its default, its range and what it is for.

``Config.from_dict`` validates a plain mapping (the Python API's dict, the C API's JSON object, the
CLI's ``--config`` file) into a frozen, typed ``Config``; a bad or unknown option is ``BadInput``
naming it. docs/config.md is the reference for users; ``OPTIONS`` is what it documents.
"""
from __future__ import annotations

import difflib
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from vm.bundle.keys import DeviceKeys, load_device
from vm.data.config import DataConfig
from vm.errors import BadInput
from vm.guard import FREE_THREADED
from vm.ml.profile import DeviceProfile
from vm.update.config import UpdateConfig


def _opt(default: Any, lo: float | None = None, hi: float | None = None, doc: str = "",
         choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"range": (lo, hi), "doc": doc, "choices": choices})


def can_isolate() -> bool:
    """Whether this OS can run workers as locked-down processes: Linux (Android included), where the
    lockdown is seccomp-BPF and Landlock (native/sandbox/); elsewhere only thread mode exists."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and hasattr(socket, "send_fds")


ISOLATION_MODES = ("process", "thread")


@dataclass(frozen=True)
class Config:
    """A validated runtime configuration (see ``from_dict``)."""

    keys: DeviceKeys = field(metadata={"doc": "device keyring: a keygen directory, a device.json path, its "
                                              "bytes, or {\"verify\": [...], \"decrypt\": [...]}"})
    isolation: str = _opt("process" if can_isolate() else "thread",
                          doc="'process': each bundle runs in locked-down worker processes forked from a zygote "
                              "(the default on Linux and Android); 'thread': in this process (hosts that cannot "
                              "spawn processes)", choices=ISOLATION_MODES)
    deadline_ms: int = _opt(50, 1, 3_600_000, "default deadline of an inference, from the call to its answer")
    load_deadline_ms: int = _opt(5000, 1, 3_600_000, "deadline for running a bundle's module top levels at load")
    workers: int | None = _opt(None, 1, 64, "calls of one bundle that run at once: worker processes per bundle "
                                            "(process mode, default 1) or core worker threads (thread mode, "
                                            "default 2)")
    spare_workers: int = _opt(1, 0, 16, "process mode: warm spare workers per bundle, ready to replace a lost one "
                                        "at once (each costs a worker's memory)")
    normal_workers: int = _opt(1, 1, 64, "worker threads of the normal queue")
    low_workers: int = _opt(1, 1, 64, "worker threads of the low queue")
    memory_limit_mb: int = _opt(256, 1, 1 << 20, "memory budget of one script call; in process mode also what a "
                                                 "worker may allocate beyond its size when it locked down")
    memory_guard: bool = _opt(True, doc="enforce memory_limit_mb (off: no per-call budget; free-threaded CPython "
                                        "has none in thread mode, and refuses one set explicitly there)")
    max_bundle_bytes: int = _opt(64 << 20, 1024, 1 << 34, "largest bundle accepted")
    max_input_bytes: int = _opt(16 << 20, 16, 1 << 31, "largest msgpack input, event or result")
    grace_ms: int = _opt(50, 1, 60_000, "how long past its deadline a call may run before its worker is retired (thread) or "
                                         "killed (process)")
    max_stuck_workers: int = _opt(4, 0, 64, "thread mode: retired (stuck) worker threads replaced before new ones "
                                           "stop")
    queue_size: int = _opt(1024, 1, 1 << 20, "accepted, not yet started tasks per queue")
    breaker_failures: int = _opt(5, 1, 1 << 30, "consecutive failures that open an entry's circuit breaker")
    breaker_cooldown_ms: int = _opt(30_000, 0, 86_400_000, "how long an open breaker fails fast")
    breaker_probes: int = _opt(1, 1, 1 << 20, "trial calls a half-open breaker lets through")
    starvation_yields: int = _opt(8, 1, 1 << 20, "yields after which a lower-priority task starts anyway")
    yield_ms: int = _opt(5, 0, 60_000, "longest pause of a lower-priority worker for a higher one (0: none)")
    gil_slice_us: int = _opt(0, -1, 10_000_000, "GIL hold time after which a normal/low worker pauses (-1: never)")
    calc_store_size: int = _opt(256, 1, 1 << 20, "calc-task results kept for tasks that use them")
    close_timeout_ms: int = _opt(1000, 0, 600_000, "how long close() waits for running calls")
    allow_downgrade: bool = _opt(False, doc="accept a bundle older than the loaded one of the same name")
    device_profile: DeviceProfile = _opt(DeviceProfile(), doc="ONNX Runtime session settings (vm.ml.profile)")
    update: UpdateConfig | None = _opt(None, doc="over-the-air updates from a channel: {channel, state_dir, root, "
                                                 "fallback_dir, device_id, device_class, interval_s, ...} "
                                                 "(docs/ota.md)")
    data: DataConfig | None = _opt(None, doc="the event store: {dir, tables, durability, commit_ms, ring_events, "
                                             "...} (docs/data.md)")
    snapshot_dir: str | None = _opt(None, doc="directory where activated feature snapshots and their state are kept "
                                              "(docs/snapshots.md)")
    max_snapshot_bytes: int = _opt(256 << 20, 1024, 1 << 34, "largest feature snapshot accepted")
    log: Callable[[str, str], None] | None = _opt(
        None, doc="Python API only: log(bundle, line) receives script output (default: the logging module)")

    @property
    def memory_limit(self) -> int:
        """The per-call memory budget in bytes."""
        return self.memory_limit_mb << 20

    @property
    def parallel(self) -> int:
        """``workers`` with the mode's default applied."""
        return self.workers or (1 if self.isolation == "process" else 2)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Config:
        """Validate ``doc``; every option but ``keys`` has a default."""
        doc = dict(doc or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in doc if k not in known)
        if unknown:
            hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, sorted(known), n=1))
                     else repr(k) for k in unknown]
            raise BadInput(f"unknown config option(s): {', '.join(hints)}")
        if "keys" not in doc:
            raise BadInput("config needs 'keys': a keygen directory, a device.json path, bytes or a dict")
        values: dict[str, Any] = {"keys": load_device(doc["keys"])}
        for f in fields(cls):
            if f.name == "keys" or f.name not in doc:
                continue
            values[f.name] = _check(f.name, doc[f.name], f.default, f.metadata)
        if values.get("isolation") == "process" and not can_isolate():
            raise BadInput("config 'isolation': 'process' is not available on this OS; use 'thread'")
        cfg = cls(**values)
        if FREE_THREADED and cfg.isolation == "thread" and cfg.memory_guard and \
                ("memory_limit_mb" in doc or "memory_guard" in doc):
            raise BadInput("config 'memory_limit_mb': a per-call memory budget cannot be enforced in thread mode on "
                           "free-threaded CPython (its allocator bypasses the budget's hooks); use 'isolation': "
                           "'process' (rlimits cap each worker's memory) or set 'memory_guard' to false")
        return cfg


def _check(name: str, value: Any, default: Any, meta: Mapping[str, Any]) -> Any:
    if name == "device_profile":
        return DeviceProfile.from_config(value)
    if name == "update":
        return None if value is None else UpdateConfig.from_config(value)
    if name == "data":
        return None if value is None else DataConfig.from_config(value)
    if name == "snapshot_dir":
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value)):
            raise BadInput("config 'snapshot_dir' must be a directory path or null")
        return None if value is None else str(value)
    if name == "log":
        if value is not None and not callable(value):
            raise BadInput("config 'log' must be a callable log(bundle, line) or None")
        return value
    if meta.get("choices"):
        if value not in meta["choices"]:
            raise BadInput(f"config {name!r} must be one of {', '.join(map(repr, meta['choices']))}, got {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise BadInput(f"config {name!r} must be true or false, got {value!r}")
        return value
    if default is None and value is None:
        return None
    lo, hi = meta.get("range", (None, None))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadInput(f"config {name!r} must be a number in [{lo}, {hi}], got {value!r}")
    return int(value)


OPTIONS: dict[str, str] = {f.name: f.metadata.get("doc", "") for f in fields(Config)}
"""Every option and what it is for (docs/config.md is written from these)."""


def default(name: str) -> Any:
    """The default value of option ``name``."""
    return Config.__dataclass_fields__[name].default
