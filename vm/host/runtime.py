"""``Runtime``: load bundles, run their entries under deadlines, report typed errors.

    rt = Runtime({"keys": "keys/", "deadline_ms": 50})
    rt.load("home.evb")
    rt.infer("home", "rank", {"events": [...], "candidates": [...]})
    rt.close()

The facade over the subsystems: the loader (``vm.bundle.loader``) turns bundle bytes into a trusted
bundle; in process mode (the default) a pool of locked-down worker processes runs it
(``vm.isolation``), in thread mode a ``BundleInstance`` (``vm.sandbox.instance``) in this process. Every
call is a task on one of three priority queues (``vm.execution.scheduler``: deadlines, circuit breakers, metrics);
tracked events start the tasks a bundle's triggers configure (``vm.execution.triggers``,
docs/scheduler.md) and, with the ``data`` option, are stored in the event store (``vm.data``,
docs/data.md) that scripts query through ``edge.events``. Inputs and results cross as msgpack (``vm.wire``, the C API's wire format); the
Python API packs and unpacks around the same path, so both see identical values and errors. Every
failure is an ``EdgeError`` with a stable code.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vm import wire
from vm.bundle import loader
from vm.bundle.triggers import BundleTriggers, parse_priority
from vm.errors import BadInput, Busy, CircuitOpen, Closed, NotFound
from vm.execution.breaker import BreakerConfig, Breakers
from vm.execution.scheduler import CORE, Scheduler
from vm.execution.tasks import Task
from vm.execution.triggers import TriggerIndex
from vm.guard import FREE_THREADED, _guard, context
from vm.host.config import Config
from vm.host.snapshots import SnapshotStore
from vm.isolation.pool import Pool
from vm.isolation.supervisor import Supervisor
from vm.sandbox import edge
from vm.sandbox.instance import BundleInstance

if TYPE_CHECKING:
    from vm.data.store import Access, EventStore
    from vm.update.updater import Updater

log = logging.getLogger("edgevm")
MAX_LISTED_ROUTES = 20  # routes an unknown-route error lists


def _memory_guard_supported() -> bool:
    # The allocator hook measures blocks with malloc_usable_size(); the debug allocator wraps them, and
    # free-threaded CPython's mimalloc heaps bypass the hooks (process mode's rlimits still hold there).
    return os.environ.get("PYTHONMALLOC", "") in ("", "malloc", "pymalloc") and \
        not hasattr(sys, "gettotalrefcount") and not FREE_THREADED


@dataclass
class _Loaded:
    """A loaded bundle and what runs it: a pool of worker processes, or an instance in this process."""

    bundle: loader.TrustedBundle
    instance: BundleInstance | None = None
    pool: Pool | None = None
    routes: list[tuple[str, str]] = field(default_factory=list)
    ab_group: str | None = None

    def task(self, op: str, business: str, payload: bytes, *, deps: list[Task] = (),  # type: ignore[assignment]
             used: tuple[tuple[str, bytes], ...] = (), memory_limit: int | None, **kw: Any) -> Task:
        """A task running ``op`` (``invoke``, ``step``, ``warm``) of this bundle."""
        if self.pool is not None:
            return Task(_pool_call, self.pool, op, business, payload, deps, used, kw.get("label", ""), deps=deps,
                        guarded=False, **kw)
        inst = self.instance
        assert inst is not None
        if op == "invoke":
            return Task(inst.invoke, business, payload, memory_limit=memory_limit, **kw)
        if op == "step":
            return Task(_run_step, inst, business, payload, deps, used, memory_limit=memory_limit, deps=deps, **kw)
        return Task(inst.warm, memory_limit=memory_limit, deps=deps, **kw)

    def retire(self, sched: Scheduler) -> None:
        """This bundle was replaced or unloaded: its workers exit once the calls routed to it ended."""
        pool = self.pool
        if pool is not None:
            pool.retire(lambda: sched.has_live(lambda t: t.fn is _pool_call and t.args[0] is pool))


class Runtime:
    """An edgevm runtime: thread-safe; every method may be called from any thread."""

    def __init__(self, config: Mapping[str, Any] | Config | None = None) -> None:
        cfg = config if isinstance(config, Config) else Config.from_dict(config)
        self.config = cfg
        self._memory_limit = cfg.memory_limit if cfg.memory_guard and _memory_guard_supported() else 0
        self._sup = Supervisor() if cfg.isolation == "process" else None  # the zygote starts in the background
        if self._memory_limit and self._sup is None:
            _guard.memory_install()
        self._script_log: Callable[[str, str], None] = cfg.log or (
            lambda bundle, line: logging.getLogger(f"edgevm.script.{bundle}").info("%s", line))
        self._sched = Scheduler(
            workers=(cfg.parallel if self._sup is None else 2, cfg.normal_workers, cfg.low_workers),
            queue_size=cfg.queue_size,
            grace_s=cfg.grace_ms / 1000, max_stuck=cfg.max_stuck_workers,
            breakers=Breakers(BreakerConfig(failures=cfg.breaker_failures,
                                            cooldown_s=cfg.breaker_cooldown_ms / 1000,
                                            probes=cfg.breaker_probes)),
            starvation_yields=cfg.starvation_yields, yield_s=cfg.yield_ms / 1000, yield_to_higher=cfg.yield_ms > 0,
            # Without a GIL (free-threaded CPython with it off) there is nothing to hand off: no pause.
            gil_slice_s=None if cfg.gil_slice_us < 0 or not getattr(sys, "_is_gil_enabled", lambda: True)()
            else cfg.gil_slice_us / 1e6)
        self._kept: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._kept_lock = threading.Lock()
        self._listener: Callable[[dict[str, Any]], None] | None = None
        self._trigger_cache: tuple[tuple[_Loaded, ...], TriggerIndex] | None = None
        self._lock = threading.Lock()
        self._bundles: dict[str, _Loaded] = {}
        self._routes: dict[tuple[str, str], tuple[_Loaded, str]] = {}
        self._closed = False
        self._store: EventStore | None = None
        if cfg.data is not None:  # only a runtime that stores events needs sqlite3 and the store
            from vm.data.store import EventStore

            self._store = EventStore(cfg.data, cfg.keys)
        self._updater: Updater | None = None
        snapshot_dir = cfg.snapshot_dir or (cfg.update.state_dir / "snapshots" if cfg.update is not None else None)
        self._snapshots = SnapshotStore(None if snapshot_dir is None else Path(snapshot_dir), cfg.keys,
                                        max_bytes=cfg.max_snapshot_bytes)
        if cfg.update is not None:  # serves the active (or fallback) bundles, then polls the channel
            from vm.update.updater import Updater  # only a runtime that updates needs TUF

            self._updater = Updater(self, cfg.update, cfg.keys, max_bundle_bytes=cfg.max_bundle_bytes)
            try:
                self._updater.start()
            except BaseException:
                self.close()
                raise

    # the limits the C API enforces before a call reaches Python
    deadline_ms = property(lambda self: self.config.deadline_ms)
    max_input_bytes = property(lambda self: self.config.max_input_bytes)
    max_bundle_bytes = property(lambda self: self.config.max_bundle_bytes)

    # -- loading -----------------------------------------------------------------------------
    def load(self, source: str | os.PathLike | bytes, *, allow_downgrade: bool | None = None,
             ab_group: str | None = None) -> dict[str, Any]:
        """Verify, decrypt, gate and load a bundle (a path or its bytes); its entries replace
        those of an older version of the same bundle atomically. ``ab_group``: the A/B group its
        scripts see through ``edge.ab_group()`` (the updater's choice, from the channel)."""
        self._check_open()
        data = self._read(source)
        bundle = loader.open_bundle(data, self.config.keys, max_size=self.config.max_bundle_bytes)
        downgrade_ok = self.config.allow_downgrade if allow_downgrade is None else allow_downgrade
        self._check_version(bundle, downgrade_ok)  # fail fast, before models and scripts load
        deadline = time.monotonic() + self.config.load_deadline_ms / 1000
        if ab_group is not None and not isinstance(ab_group, str):
            raise BadInput(f"ab_group must be a string or None, not {type(ab_group).__name__}")
        access = self._events_access(bundle)
        loaded = (self._start_pool(bundle, deadline, access, ab_group) if self._sup is not None
                  else self._instance(bundle, deadline, access, ab_group))
        try:
            old = self._install(loaded, downgrade_ok)
        except BaseException:
            loaded.retire(self._sched)
            raise
        if old is not None:
            old.retire(self._sched)  # the calls routed to it finish on its workers, which then exit
        log.info("loaded bundle %s %s (%d modules, %d models, %s)", bundle.name, bundle.version, len(bundle.codes),
                 len(bundle.models), self.config.isolation)
        return self._info(loaded)

    def _events_access(self, bundle: loader.TrustedBundle) -> Access | None:
        """What the bundle's scripts may do with the event store (its own tables opened now)."""
        events = bundle.manifest.events
        if self._store is None:
            if events.tables:
                raise BadInput(f"bundle {bundle.name} declares event tables ({', '.join(events.tables)}) but this "
                               "runtime has no event store (config 'data')")
            return None
        return self._store.access(bundle.name, events)

    def _thread_events(self, access: Access | None) -> edge.EventsBackend:
        """Thread mode's ``edge.events`` backend: the arguments go through the wire format as in process
        mode (plain values only, never a script's object), under the call's own deadline."""
        def call(op: str, args: list) -> Any:
            if access is None:
                raise NotFound("no event store is configured (config 'data')")
            ctx = context.current()
            left = ctx.remaining() if ctx is not None else self.config.deadline_ms / 1000
            plain = wire.decode(wire.encode(args, what="the edge.events arguments"))
            return access.call(op, plain, time.monotonic() + left)

        return call

    def _instance(self, bundle: loader.TrustedBundle, deadline: float, access: Access | None,
                  ab_group: str | None) -> _Loaded:
        """Thread mode: the bundle runs in this process; its module top levels run as core tasks."""
        name = bundle.name
        edge.preload()
        instance = BundleInstance(bundle, self._load_models(bundle), log=lambda line: self._script_log(name, line),
                                  max_result=self.config.max_input_bytes, events=self._thread_events(access),
                                  features=self._snapshots.current, ab_group=ab_group)
        for business, spec in bundle.manifest.entries.items():
            self._sched.call(Task(instance.resolve, business, kind="load", entry=name,
                                  label=f"loading {name} ({spec})", priority=CORE, deadline=deadline,
                                  memory_limit=self._memory_limit or None))
        if instance.sessions:  # each model's first run (slow: memory planning) happens now, not in a caller's call
            self._sched.call(Task(instance.warm, kind="load", entry=name, label=f"warming {name}'s models",
                                  priority=CORE, deadline=deadline, memory_limit=self._memory_limit or None))
        return _Loaded(bundle=bundle, instance=instance, ab_group=ab_group)

    def _start_pool(self, bundle: loader.TrustedBundle, deadline: float, access: Access | None,
                    ab_group: str | None) -> _Loaded:
        """Process mode: the bundle's worker pool, every worker loaded and locked down."""
        assert self._sup is not None
        cfg = self.config
        name = bundle.name
        pool = Pool(self._sup, bundle, size=cfg.parallel, spares=cfg.spare_workers, grace_s=cfg.grace_ms / 1000,
                    max_frame=cfg.max_input_bytes + 4096, on_log=lambda line: self._script_log(name, line),
                    features=self._snapshots.current,
                    settings={"memory_limit": self._memory_limit, "process_memory": cfg.memory_limit,
                              "cpu_seconds": max(1, round(cfg.grace_ms / 1000 + 5)), "grace_s": cfg.grace_ms / 1000,
                              "profile": cfg.device_profile.to_config(), "max_result": cfg.max_input_bytes,
                              "load_timeout_s": cfg.load_deadline_ms / 1000, "ab_group": ab_group},
                    events=None if access is None else
                    lambda op, args, deadline, writes: access.call(op, args, deadline, writes=writes),
                    prefetch=access.prefetch if access is not None and access.prefetches else None)
        pool.start(deadline)
        with self._lock:
            active = sum(b.pool.size for b in self._bundles.values() if b.pool is not None and b.bundle.name != name)
        self._sched.ensure_workers(CORE, 2 + active + pool.size)
        return _Loaded(bundle=bundle, pool=pool, ab_group=ab_group)

    def _install(self, loaded: _Loaded, downgrade_ok: bool) -> _Loaded | None:
        """The version check and the route swap, in one critical section; the replaced bundle."""
        bundle = loaded.bundle
        name, system = bundle.name, bundle.manifest.system
        with self._lock:
            self._check_open()
            self._check_version(bundle, downgrade_ok, locked=True)
            for business in bundle.manifest.entries:
                owner = self._routes.get((system, business))
                if owner is not None and owner[0].bundle.name != name:
                    raise BadInput(f"{system}/{business} is already served by bundle {owner[0].bundle.name}")
            old = self._bundles.get(name)
            if old is not None:
                for route in old.routes:
                    self._routes.pop(route, None)
            for business in bundle.manifest.entries:
                self._routes[(system, business)] = (loaded, business)
                loaded.routes.append((system, business))
            self._bundles[name] = loaded
        return old

    def _read(self, source: str | os.PathLike | bytes, what: str = "bundle", limit: int | None = None) -> bytes:
        """A bundle's (or snapshot's) bytes from a path or bytes, its size checked before it is read."""
        limit = self.config.max_bundle_bytes if limit is None else limit
        if isinstance(source, (bytes, bytearray, memoryview)):
            return bytes(source)
        if not isinstance(source, (str, os.PathLike)):
            raise BadInput(f"loading a {what} takes a path or bytes, not {type(source).__name__}")
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise NotFound(f"{what} file {path} not found") from None
        if size > limit:
            raise BadInput(f"{what} of {size} bytes exceeds the limit of {limit} bytes")
        return path.read_bytes()

    def _check_version(self, bundle: loader.TrustedBundle, allow_downgrade: bool, *, locked: bool = False) -> None:
        if locked:
            current = self._bundles.get(bundle.name)
        else:
            with self._lock:
                current = self._bundles.get(bundle.name)
        loader.check_version(bundle, current.bundle.version if current else None, allow_downgrade=allow_downgrade)

    def _load_models(self, bundle: loader.TrustedBundle) -> dict[str, Any]:
        if not bundle.models:
            return {}
        from vm.ml import models

        return models.load_models(bundle.models, self.config.device_profile)

    # -- feature snapshots (docs/snapshots.md) -------------------------------------------------
    def load_snapshot(self, source: str | os.PathLike | bytes, *,
                      expect: tuple[str, str] | None = None) -> dict[str, Any]:
        """Verify (signature first), decrypt, check and activate a feature snapshot (a path or its
        bytes): calls that start afterwards read it; calls in flight finish on the version they
        started with. One not newer than the highest version activated for its name is refused
        (``Downgrade``), across restarts when snapshots are kept on disk. ``expect``: the (name,
        version) it must be (the updater's target)."""
        self._check_open()
        return self._snapshots.activate(self._read(source, "snapshot", self.config.max_snapshot_bytes),
                                        expect=expect)

    def snapshots(self) -> list[dict[str, Any]]:
        """The active feature snapshots: name, version, kind, size, columns."""
        return self._snapshots.list()

    def snapshot_floor(self, name: str) -> str | None:
        """The highest version of snapshot ``name`` this device ever activated (None: never)."""
        return self._snapshots.floor(name)

    def unload(self, name: str) -> None:
        """Remove a bundle and its routes."""
        with self._lock:
            loaded = self._bundles.pop(name, None)
            if loaded is None:
                raise NotFound(f"no bundle named {name!r} is loaded")
            for route in loaded.routes:
                self._routes.pop(route, None)
        loaded.retire(self._sched)

    def bundles(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._info(b) for b in self._bundles.values()]

    @staticmethod
    def _info(loaded: _Loaded) -> dict[str, Any]:
        b = loaded.bundle
        return {"name": b.name, "version": b.version, "system": b.manifest.system, "ab_group": loaded.ab_group,
                "entries": sorted(b.manifest.entries), "models": sorted(b.models),
                "modules": sorted(b.codes), "sign_key_id": b.header.sign_key_id}

    # -- running -----------------------------------------------------------------------------
    def infer(self, system: str, business: str, inputs: Any, *, deadline_ms: float | None = None,
              priority: str | int = "core") -> Any:
        """Run the entry for ``system``/``business`` on ``inputs`` (msgpack-serialisable data)."""
        payload = wire.encode(inputs, what="the inputs", limit=self.config.max_input_bytes)
        result = self.infer_msgpack(system, business, payload, deadline_ms=deadline_ms, priority=priority)
        return wire.decode(result, what="the result")

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
        watched = task.on_done  # the updater's, if this version is on probation
        task.on_done = lambda t: (callback(*_outcome(t)), watched(t) if watched else None)
        return self._sched.submit(task)[0]

    def _infer_task(self, system: str, business: str, payload: bytes, deadline_ms: float | None,
                    priority: str | int) -> Task:
        self._check_open()
        if not isinstance(system, str) or not isinstance(business, str):
            raise BadInput("system and business codes must be strings")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise BadInput("inputs must be msgpack bytes")
        if len(payload) > self.config.max_input_bytes:
            raise BadInput(f"inputs of {len(payload)} bytes exceed the limit of {self.config.max_input_bytes}")
        route = self._routes.get((system, business))
        if route is None:
            with self._lock:
                known = sorted(self._routes)
            listed = ", ".join(f"{s}/{b}" for s, b in known[:MAX_LISTED_ROUTES])
            more = f" and {len(known) - MAX_LISTED_ROUTES} more" if len(known) > MAX_LISTED_ROUTES else ""
            raise NotFound(f"no entry for system {system!r}, business {business!r}; "
                           f"loaded: {listed + more if known else 'none (no bundle is loaded)'}")
        loaded, _ = route
        budget = self.config.deadline_ms if deadline_ms is None else deadline_ms
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
            raise BadInput("deadline_ms must be a positive number")
        b = loaded.bundle
        label = f"{system}/{business}"
        task = loaded.task("invoke", business, bytes(payload), kind="infer", entry=label, label=label,
                           priority=parse_priority(priority), budget_s=budget / 1000,
                           memory_limit=self._memory_limit or None, bundle=(b.name, b.version),
                           breaker=self._sched.breakers.get(b.name, business, b.version))
        if self._updater is not None:
            self._updater.watch(task, b.name, b.version)
        return task

    # -- over-the-air updates (docs/ota.md) --------------------------------------------------
    def update_now(self) -> list[dict[str, Any]]:
        """Check the update channel now and install what is new for this device; the events that
        happened (checked, downloaded, activated, refused, each with its reason)."""
        self._check_open()
        if self._updater is None:
            raise BadInput("no update channel is configured (config 'update')")
        return self._updater.check()

    def set_update_listener(self, callback: Callable[[dict[str, Any]], None] | None) -> None:
        """Receive every update event as a dict (``event``: checked, downloaded, activated,
        confirmed, rolled_back or refused; ``bundle``, ``version``, ``reason``...), on the thread
        that caused it; ``None`` stops it."""
        if callback is not None and not callable(callback):
            raise BadInput("update listener must be callable or None")
        if self._updater is None:
            raise BadInput("no update channel is configured (config 'update')")
        self._updater.set_listener(callback)

    # -- event triggers ----------------------------------------------------------------------
    def set_listener(self, callback: Callable[[dict[str, Any]], None] | None) -> None:
        """Receive the results of event-triggered tasks (``None`` stops it): a dict with task_id,
        task_name, kind, bundle, system, business, status, result (msgpack bytes) and error."""
        if callback is not None and not callable(callback):
            raise BadInput("listener must be callable or None")
        self._listener = callback

    def track_msgpack(self, payload: bytes) -> list[int]:
        """``track`` with the event as msgpack bytes (what the C API calls)."""
        try:
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise BadInput("the event must be msgpack bytes")
            if len(payload) > self.config.max_input_bytes:
                raise BadInput(f"event of {len(payload)} bytes exceeds the limit of {self.config.max_input_bytes}")
            event = wire.decode(payload, what="the event")
        except BadInput:
            if self._store is not None:
                self._store.count_refused("invalid_msgpack")
            raise
        return self.track(event)

    def track(self, event: dict[str, Any]) -> list[int]:
        """Match a tracked event against every loaded bundle's triggers and start the configured
        tasks (with the chains they run after); return the ids of the tasks created. A chain that
        the queues or a breaker refuse is counted and skipped. With an event store, an event that
        names a ``table`` is stored first (docs/data.md); a bad one is refused whole (``BadInput``,
        counted) and fires nothing."""
        self._check_open()
        if not isinstance(event, dict):
            if self._store is not None:
                self._store.count_refused("not_a_map")
            raise BadInput(f"an event must be a dict, not {type(event).__name__}")
        index, loaded_by_name = self._triggers()
        stored_only = self._store is not None and "table" in event and "type" not in event  # matches no rule
        try:
            matches = [] if stored_only else index.match(event)
        except BadInput:
            if self._store is not None:
                self._store.count_refused("invalid_event")
            raise
        if self._store is not None:  # stored (or refused, whole) before any trigger fires
            self._store.track(event)
        if not matches:
            return []
        payload = wire.encode(event, what="the event", limit=self.config.max_input_bytes)
        if len(payload) > self.config.max_input_bytes:
            raise BadInput(f"event of {len(payload)} bytes exceeds the limit of {self.config.max_input_bytes}")
        ids: list[int] = []
        for bundle_name, task_name in matches:
            try:
                ids += self._submit_chain(loaded_by_name[bundle_name], task_name, payload)
            except (Busy, CircuitOpen) as exc:
                log.info("event on page %s: task %s of %s refused: %s", event.get("pageId"), task_name,
                         bundle_name, exc)
            except Closed:
                if not ids:
                    raise
                break
        return ids

    def replay_events(self, events: list[dict[str, Any]], *, now_ms: int, reset: bool = False) -> None:
        """Bring the event store to a device's state at ``now_ms``, for replay (``vm.tools.replay``):
        with ``reset``, empty every table first (a new user's device); store ``events`` as ``track``
        stores them (validated; no trigger fires: triggered tasks are not replayed); from then on the
        store's clock reads ``now_ms`` (retention, a missing ``ts``), and retention is applied as of it,
        so ``edge.events`` answers as the device's store did at that moment (docs/replay.md)."""
        self._check_open()
        if self._store is None:
            raise NotFound("no event store is configured (config 'data')")
        if type(now_ms) is not int or now_ms < 0:
            raise BadInput(f"now_ms must be a non-negative int (milliseconds), got {now_ms!r}")
        store = self._store
        if reset:
            store.empty()
        store.clock = lambda: now_ms
        for event in events:
            store.track(event)
        store.flush()
        store.prune(now_ms)

    def _triggers(self) -> tuple[TriggerIndex, dict[str, _Loaded]]:
        with self._lock:
            current = tuple(self._bundles.values())
        cache = self._trigger_cache
        if cache is None or len(cache[0]) != len(current) or not all(
                a is b for a, b in zip(cache[0], current, strict=True)):
            cache = (current, TriggerIndex((b.bundle.name, b.bundle.manifest.triggers) for b in current))
            self._trigger_cache = cache
        return cache[1], {b.bundle.name: b for b in cache[0]}

    def _submit_chain(self, loaded: _Loaded, root: str, payload: bytes) -> list[int]:
        b = loaded.bundle
        cfg: BundleTriggers = b.manifest.triggers
        system = b.manifest.system
        with self._kept_lock:
            kept = dict(self._kept)
        tasks: dict[str, Task] = {}
        total_ms = 0.0
        specs = cfg.chain(root)
        for spec in specs:
            default_ms = self.config.load_deadline_ms if spec.kind == "preload" else self.config.deadline_ms
            budget_ms = spec.deadline_ms or default_ms
            total_ms += budget_ms
            info = {"task_name": spec.name, "kind": spec.kind, "bundle": b.name, "system": system,
                    "business": spec.business}
            common: dict[str, Any] = dict(
                kind=spec.kind, name=spec.name, label=f"{b.name}:{spec.name}", priority=spec.queue,
                budget_s=budget_ms / 1000, memory_limit=self._memory_limit or None, bundle=(b.name, b.version),
                deps=[tasks[d] for d in spec.after], on_done=self._event_done, info=info)
            if spec.business is None:
                tasks[spec.name] = loaded.task("warm", "", b"", entry=f"{b.name}:models", **common)
                continue
            used = tuple((u, kept[(b.name, u)]) for u in spec.uses if (b.name, u) in kept)
            tasks[spec.name] = loaded.task(
                "step", spec.business, payload, used=used, entry=f"{system}/{spec.business}",
                breaker=self._sched.breakers.get(b.name, spec.business, b.version), **common)
        chain_ms = specs[-1].chain_deadline_ms or total_ms
        return self._sched.submit(list(tasks.values()), chain_deadline=time.monotonic() + chain_ms / 1000)

    def _event_done(self, t: Task) -> None:
        info = t.info
        if t.error is None and info["kind"] == "calc":
            with self._kept_lock:
                key = (info["bundle"], info["task_name"])
                self._kept[key] = t.result
                self._kept.move_to_end(key)
                while len(self._kept) > self.config.calc_store_size:
                    self._kept.popitem(last=False)
        listener = self._listener
        if listener is not None:
            listener({"task_id": t.id, **info, "status": t.status,
                      "result": t.result if t.error is None else None,
                      "error": None if t.error is None else str(t.error)})

    def version_counts(self, name: str, version: str) -> dict[str, int]:
        """The counters of bundle ``name`` ``version``'s own inferences (``faults``: the ones it
        is to blame for), apart from every other version's: what the updater's probation judges."""
        return self._sched.metrics.version_counts(name, version, "infer")

    def metrics(self) -> dict[str, Any]:
        """Counters and latency percentiles per task kind and entry (``tasks``, versions merged)
        and per bundle version (``versions``), queue state, circuit breakers and trigger rules, as
        plain (msgpack-able) data."""
        cache = self._trigger_cache
        snap = self._sched.snapshot()
        snap["triggers"] = {"rules": cache[1].rules if cache else 0}
        snap["kept_features"] = len(self._kept)
        snap["isolation"] = self._isolation_stats()
        if self._store is not None:
            snap["events"] = self._store.metrics()
        with self._lock:
            loaded = list(self._bundles.values())
        snap["bundles"] = {b.bundle.name: {"version": b.bundle.version, "ab_group": b.ab_group} for b in loaded}
        for b in loaded:  # a version's own metrics say which A/B group they are from
            mine = snap["versions"].get(b.bundle.name, {}).get(b.bundle.version)
            if mine is not None:
                mine["ab_group"] = b.ab_group
        return snap

    def _isolation_stats(self) -> dict[str, Any]:
        if self._sup is None:
            return {"mode": "thread"}
        with self._lock:
            pools = {f"{b.bundle.name} {b.bundle.version}": b.pool.stats() for b in self._bundles.values()
                     if b.pool is not None}
        return {"mode": "process", "zygote_pid": self._sup.zygote_pid, "workers_spawned": self._sup.spawned,
                "pools": pools}

    def stats(self) -> dict[str, Any]:
        return {"bundles": len(self._bundles), "routes": len(self._routes), **self._sched.stats()}

    def close(self) -> None:
        """Stop serving; pending calls fail with ``Closed``. Idempotent."""
        if self._updater is not None:
            self._updater.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loaded = list(self._bundles.values())
            self._bundles.clear()
            self._routes.clear()
        self._sched.close(self.config.close_timeout_ms / 1000)
        if self._store is not None:
            self._store.close()
        if self._sup is not None:
            for b in loaded:
                if b.pool is not None:
                    b.pool.close(0)
            self._sup.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the runtime is closed")

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pool_call(deadline: float, pool: Pool, op: str, business: str, payload: bytes, deps: list[Task],
               kept: tuple[tuple[str, bytes], ...], label: str) -> bytes:
    """A task's work in the bundle's worker pool (process mode)."""
    return pool.call(deadline, op, business, payload, [*kept, *((d.name, d.result) for d in deps)], label=label)


def _run_step(instance: BundleInstance, business: str, payload: bytes, deps: list[Task],
              kept: tuple[tuple[str, bytes], ...]) -> bytes:
    """An event-triggered step, given the results of this chain's calc tasks it runs after (read
    when it runs) and the latest kept results of the ones it uses."""
    return instance.step(business, payload, [*kept, *((d.name, d.result) for d in deps)])


def _outcome(t: Task) -> tuple[int, bytes]:
    """(status, data) for an ``infer_async`` callback."""
    if t.error is None:
        return 0, t.result
    return t.error.code, str(t.error).encode("utf-8", "replace")
