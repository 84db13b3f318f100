"""The device's updater: check the channel, pick this device's target, download, verify, activate
atomically, hot swap, watch the new version, and roll it back if it fails (docs/ota.md).

It runs in the host process, never in a script worker: the Runtime owns one (config ``update``),
drives it through ``Host`` (its own ``load``/``unload``/``bundles``), and feeds it the outcome of
every call of a version on probation (``watch``). Checks run on the caller's thread
(``Runtime.update_now``) or on the updater's thread (jittered exponential backoff); rollbacks
always on the updater's thread, since a call's callback must not wait for a load.
"""
from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tuf.api.metadata import TargetFile

import vm
from vm.bundle import files, loader
from vm.bundle.channel import Offer, SnapshotOffer
from vm.bundle.keys import DeviceKeys
from vm.bundle.versions import parse_version
from vm.errors import BadInput, Busy, Closed, EdgeError
from vm.execution.breaker import OPEN
from vm.execution.metrics import SETTLED
from vm.execution.scheduler import NOT_THE_ENTRYS_FAULT
from vm.execution.tasks import Task
from vm.update.channel import ChannelClient
from vm.update.config import UpdateConfig
from vm.update.fetcher import ChannelFetcher
from vm.update.state import State

log = logging.getLogger("edgevm.update")
EVENTS = ("checked", "downloaded", "activated", "confirmed", "rolled_back", "refused")
FIRST_CHECK_S = 5.0  # the first background check comes within this long of the start
RETRY_S = 10.0  # the first retry after a failed check; doubles per failure, at most interval_s


class Host(Protocol):
    """What the updater needs of the runtime that owns it."""

    def load(self, source: Any, *, allow_downgrade: bool | None = None,
             ab_group: str | None = None) -> dict[str, Any]: ...
    def unload(self, name: str) -> None: ...
    def bundles(self) -> list[dict[str, Any]]: ...
    def load_snapshot(self, source: Any, *, expect: tuple[str, str] | None = None) -> dict[str, Any]: ...
    def snapshot_floor(self, name: str) -> str | None: ...
    def version_counts(self, name: str, version: str) -> dict[str, int]: ...


def bucket(device_id: str, name: str) -> int:
    """This device's rollout bucket for bundle ``name``, in [0, 10000) (basis points): stable for a
    device id, and independent between bundles (a device early for one bundle is not early for all)."""
    digest = hashlib.sha256(f"{device_id}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def ab_group(device_id: str, offer: Offer) -> str | None:
    """This device's A/B group for ``offer`` (None: the target has no A/B test): a stable point
    from the device id and the bundle name, as the rollout bucket, but hashed apart from it (else
    a 10 % rollout would put every device that takes it in the first group); the same group for
    every version published with the same split."""
    point = bucket(device_id, f"{offer.name}\0ab")
    for group, bp in offer.ab:
        if point < bp:
            return group
        point -= bp
    return None


@dataclass
class _Probe:
    """A newly activated version's first calls (counted by the runtime's metrics of that version)."""

    version: str
    calls: int = 0
    verdict: str | None = None  # "good" or "bad"
    reason: str = ""


class Updater:
    """One runtime's updater (thread-safe)."""

    def __init__(self, host: Host, config: UpdateConfig, keys: DeviceKeys, *, max_bundle_bytes: int) -> None:
        self.host = host
        self.config = config
        self.keys = keys
        self.max_bundle_bytes = max_bundle_bytes
        self.dir = config.state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = State.load(self.dir)
        self.device_id = config.device_id or self.state.device_id
        self.client = ChannelClient(config.channel, self.dir / "metadata", config.root,
                                    ChannelFetcher(config.timeout_s, config.download_timeout_s))
        self._work = threading.RLock()  # one check, rollback or confirmation at a time
        self._cond = threading.Condition()
        self._probes: dict[str, _Probe] = {}
        self._listener: Callable[[dict[str, Any]], None] | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._bad_snapshots: set[tuple[str, str]] = set()  # refused by the device: not fetched again
        self._start_events: list[dict[str, Any]] = []  # handed to the first listener set

    # -- start and stop ------------------------------------------------------------------------
    def start(self) -> None:
        """Serve what the state names (or the fallback bundles), then start the background thread."""
        with self._work:
            self._serve_initial()
        self._thread = threading.Thread(target=self._loop, name="edgevm-updater", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread; a clean shutdown: recorded, so the next start does not
        count this run towards a crash loop."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._work:
            self.state.running = False
            for bs in self.state.bundles.values():
                bs.crashes = 0
            try:
                self.state.save(self.dir)
            except OSError as exc:
                log.error("update state not saved at shutdown: %s", exc)

    def _fallbacks(self) -> dict[str, tuple[str, Path]]:
        """Bundles shipped with the app: name -> (version, path); signatures checked."""
        found: dict[str, tuple[str, Path]] = {}
        d = self.config.fallback_dir
        for path in sorted(d.glob("*.evb")) if d is not None and d.is_dir() else []:
            try:
                header = loader.read_header(path.read_bytes(), self.keys, max_size=self.max_bundle_bytes)["header"]
            except (EdgeError, OSError) as exc:
                log.error("fallback bundle %s refused: %s", path, exc)
                continue
            name, version = header["name"], header["version"]
            if name not in found or parse_version(version) > parse_version(found[name][0]):
                found[name] = (version, path)
        return found

    def _crash_loops(self) -> None:
        """The last run ended without a clean shutdown: count it against each version on
        probation; one that ended ``crash_loop_restarts`` runs in a row is rolled back now, before
        it loads again, and marked bad (thread mode: a script that kills the process)."""
        if not self.state.running:
            return
        limit = self.config.crash_loop_restarts
        for name, bs in sorted(self.state.bundles.items()):
            if bs.active is None or bs.active == bs.last_good:
                continue
            bs.crashes += 1
            if limit and bs.crashes >= limit:
                bad, bs.active, bs.crashes = bs.active, bs.last_good, 0
                bs.bad.append(bad)
                self._emit(self._start_events, "rolled_back", bundle=name, version=bad, to=bs.last_good,
                           reason=f"the process ended {limit} times in a row without a clean shutdown "
                                  f"while {bad} was on probation (a crash loop)")

    def _serve_initial(self) -> None:
        self._crash_loops()
        self.state.running = True
        self.state.save(self.dir)  # before anything runs: a crash from here on is counted at the next start
        changed = False
        for name, bs in sorted(self.state.bundles.items()):
            for version in dict.fromkeys(v for v in (bs.active, bs.last_good) if v is not None):
                try:
                    self.host.load(State.bundle_file(self.dir, name, version), allow_downgrade=True,
                                   ab_group=bs.groups.get(version))
                except EdgeError as exc:
                    log.error("update state names %s %s, which does not load (%s)", name, version, exc)
                    continue
                if version != bs.active:
                    bs.active, changed = version, True
                if version != bs.last_good:
                    self._probes[name] = _Probe(version)  # it was on probation when the process ended
                break
            else:
                if bs.active is not None:
                    bs.active, changed = None, True
        if changed:
            self.state.save(self.dir)
        loaded = {b["name"]: b["version"] for b in self.host.bundles()}
        for name, (version, path) in self._fallbacks().items():
            if name in loaded and parse_version(loaded[name]) >= parse_version(version):
                continue
            try:
                self.host.load(path, allow_downgrade=True)
            except EdgeError as exc:
                log.error("fallback bundle %s does not load: %s", path, exc)

    # -- events --------------------------------------------------------------------------------
    def set_listener(self, fn: Callable[[dict[str, Any]], None] | None) -> None:
        """Send every event to ``fn`` from now on; the first listener set also receives the events
        of the start (a crash-loop rollback), which happened before anyone could listen."""
        self._listener = fn
        early, self._start_events = self._start_events, []
        for doc in early if fn is not None else ():
            try:
                fn(doc)
            except Exception:
                log.exception("update listener raised on %s", doc)

    def _emit(self, events: list[dict[str, Any]], event: str, **info: Any) -> None:
        doc = {"event": event, **info}
        events.append(doc)
        (log.warning if event in ("refused", "rolled_back") else log.info)("update: %s", doc)
        listener = self._listener
        if listener is not None:
            try:
                listener(doc)
            except Exception:
                log.exception("update listener raised on %s", doc)

    # -- one check -----------------------------------------------------------------------------
    def eligible(self, offer: Offer) -> bool:
        """Whether this device is among those ``offer`` is for (device class, rollout, runtime)."""
        if offer.device_classes and self.config.device_class not in offer.device_classes:
            return False
        if offer.min_runtime is not None and parse_version(offer.min_runtime) > parse_version(vm.__version__):
            return False
        return bucket(self.device_id, offer.name) < offer.rollout_bp

    def check(self) -> list[dict[str, Any]]:
        """Check the channel once and install what is new for this device; the events it caused."""
        events: list[dict[str, Any]] = []
        with self._work:
            try:
                offers = self.client.refresh()
            except EdgeError as exc:
                self._failures += 1
                self._emit(events, "refused", reason=str(exc), error=exc.name)
                return events
            self._failures = 0
            self._emit(events, "checked", offers=len(offers))
            loaded = {b["name"]: b["version"] for b in self.host.bundles()}
            by_name: dict[str, list[tuple[Offer, TargetFile]]] = {}
            for offer, target in offers:
                if self.eligible(offer):
                    by_name.setdefault(offer.name, []).append((offer, target))
            for name, mine in sorted(by_name.items()):
                bs = self.state.bundles.get(name)
                bad = set(bs.bad) if bs else set()
                mine = [m for m in mine if m[0].version not in bad]
                if not mine:
                    continue
                offer, target = max(mine, key=lambda m: parse_version(m[0].version))
                current = loaded.get(name)
                if current is not None and parse_version(offer.version) <= parse_version(current):
                    if parse_version(offer.version) < parse_version(current):
                        self._emit(events, "refused", bundle=name, version=offer.version, error="downgrade",
                                   reason=f"the channel's newest {name} for this device is {offer.version}, "
                                          f"older than the active {current}")
                    continue
                if bs is not None and not bs.floor_allows(offer.version):
                    self._emit(events, "refused", bundle=name, version=offer.version, error="downgrade",
                               reason=f"{name} {bs.highest} was activated before; never below it")
                    continue
                self._install(offer, target, events)
            self._check_snapshots(events)
        return events

    def _check_snapshots(self, events: list[dict[str, Any]]) -> None:
        """Download and activate the newest version of each feature snapshot the channel offers, if
        it is newer than the highest this device activated (docs/snapshots.md)."""
        newest: dict[str, tuple[SnapshotOffer, TargetFile]] = {}
        for offer, target in self.client.snapshot_offers:
            if (offer.name, offer.version) in self._bad_snapshots:
                continue
            if offer.name not in newest or parse_version(offer.version) > parse_version(newest[offer.name][0].version):
                newest[offer.name] = (offer, target)
        for name, (offer, target) in sorted(newest.items()):
            floor = self.host.snapshot_floor(name)
            if floor is not None and parse_version(offer.version) <= parse_version(floor):
                if parse_version(offer.version) < parse_version(floor):
                    self._emit(events, "refused", snapshot=name, version=offer.version, error="downgrade",
                               reason=f"the channel's newest snapshot {name} is {offer.version}, older than {floor}")
                continue
            part = self.dir / "staging" / f"snapshot-{name}-{offer.version}.part"
            try:
                data = self._download(target, part, events, snapshot=name, version=offer.version)
            finally:
                part.unlink(missing_ok=True)
            if data is None:
                continue
            try:
                self.host.load_snapshot(data, expect=(name, offer.version))
            except (Busy, Closed):
                raise
            except EdgeError as exc:  # signed by the channel but refused by the device: not again
                self._bad_snapshots.add((name, offer.version))
                self._emit(events, "refused", snapshot=name, version=offer.version, reason=str(exc), error=exc.name)
                continue
            self._emit(events, "activated", snapshot=name, version=offer.version)

    def _download(self, target: TargetFile, part: Path, events: list[dict[str, Any]], **what: str) -> bytes | None:
        """``target``'s verified bytes, downloaded through ``part`` in the staging directory and
        reported (``what``: bundle or snapshot, and version); None when the download failed (a
        transport failure or an attack on it: reported, and the next check tries again)."""
        part.parent.mkdir(exist_ok=True)
        try:
            data = self.client.download(target, part)
        except EdgeError as exc:
            self._emit(events, "refused", **what, reason=str(exc), error=exc.name)
            return None
        self._emit(events, "downloaded", **what, bytes=len(data))
        return data

    def _install(self, offer: Offer, target: TargetFile, events: list[dict[str, Any]]) -> None:
        name, version = offer.name, offer.version
        part = self.dir / "staging" / f"{name}-{version}.part"
        data = self._download(target, part, events, bundle=name, version=version)
        if data is None:
            return
        try:
            header = loader.read_header(data, self.keys, max_size=self.max_bundle_bytes)["header"]
            if (header["name"], header["version"]) != (name, version):
                raise BadInput(f"target {target.path} holds bundle {header['name']} {header['version']}")
            group = ab_group(self.device_id, offer)
            self.host.load(data, ab_group=group)  # verify, decrypt, gate, start, swap: the one load path
        except (Busy, Closed):
            part.unlink(missing_ok=True)
            raise
        except EdgeError as exc:  # signed by the channel but refused by the device: never again
            part.unlink(missing_ok=True)
            self.state.of(name).bad.append(version)
            self.state.save(self.dir)
            self._emit(events, "refused", bundle=name, version=version, reason=str(exc), error=exc.name)
            return
        part.unlink(missing_ok=True)
        files.write_atomic(State.bundle_file(self.dir, name, version), data)
        bs = self.state.of(name)
        bs.active = version
        bs.crashes = 0
        if group is not None:
            bs.groups[version] = group
        if bs.floor_allows(version):
            bs.highest = version
        self.state.save(self.dir)
        self.state.prune(self.dir, name, {v for v in (version, bs.last_good) if v is not None})
        with self._cond:
            self._probes[name] = _Probe(version)
        self._emit(events, "activated", bundle=name, version=version)

    # -- probation -----------------------------------------------------------------------------
    def watch(self, task: Task, name: str, version: str) -> None:
        """Count ``task``'s outcome if it calls a version on probation (the hot path: one lookup)."""
        probe = self._probes.get(name)
        if probe is not None and probe.version == version and probe.verdict is None:
            task.on_done = lambda t: self._observe(name, probe, t)

    def _observe(self, name: str, probe: _Probe, t: Task) -> None:
        error = t.error
        failed = error is not None and not isinstance(error, NOT_THE_ENTRYS_FAULT)
        counts = self.host.version_counts(name, probe.version)  # this version's own, t included
        calls = sum(counts[c] for c in SETTLED)
        with self._cond:
            if probe.verdict is not None:
                return
            probe.calls = calls
            if counts["faults"] > self.config.probation_failures:
                probe.verdict = "bad"
                probe.reason = f"{counts['faults']} of its first {calls} calls failed" + (
                    f" (last: {error.name}: {error})" if error is not None else "")
            elif failed and t.breaker is not None and t.breaker.state == OPEN:
                probe.verdict, probe.reason = "bad", f"its circuit breaker opened ({error})"
            elif calls >= self.config.probation_calls:
                probe.verdict = "good"
            else:
                return
            self._cond.notify_all()

    def _settle(self) -> None:
        """Act on probation verdicts (on the updater's thread)."""
        with self._cond:
            done = [(n, p) for n, p in self._probes.items() if p.verdict is not None]
            for n, _ in done:
                del self._probes[n]
        for name, probe in done:
            with self._work:
                if probe.verdict == "good":
                    self._confirm(name, probe)
                else:
                    self._rollback(name, probe)

    def _confirm(self, name: str, probe: _Probe) -> None:
        bs = self.state.of(name)
        if bs.active != probe.version:
            return
        bs.last_good = probe.version
        bs.crashes = 0
        self.state.save(self.dir)
        self.state.prune(self.dir, name, {probe.version})
        self._emit([], "confirmed", bundle=name, version=probe.version, calls=probe.calls)

    def _rollback(self, name: str, probe: _Probe) -> None:
        bs = self.state.of(name)
        if bs.active != probe.version:
            return
        bs.bad.append(probe.version)
        bs.active = bs.last_good
        self.state.save(self.dir)  # first: a crash from here on restarts on the good version
        fallback = self._fallbacks().get(name)
        try:
            if bs.last_good is not None:
                self.host.load(State.bundle_file(self.dir, name, bs.last_good), allow_downgrade=True,
                               ab_group=bs.groups.get(bs.last_good))
                to = bs.last_good
            elif fallback is not None:
                self.host.load(fallback[1], allow_downgrade=True)
                to = f"{fallback[0]} (fallback)"
            else:
                self.host.unload(name)
                to = None
        except EdgeError as exc:
            log.error("rollback of %s %s failed: %s", name, probe.version, exc)
            to = None
        self.state.prune(self.dir, name, {bs.last_good} if bs.last_good else set())
        self._emit([], "rolled_back", bundle=name, version=probe.version, to=to, reason=probe.reason)

    # -- the background thread -----------------------------------------------------------------
    def _next_delay(self) -> float:
        interval = self.config.interval_s
        if self._failures:
            return min(interval, RETRY_S * 2 ** (self._failures - 1)) * random.uniform(0.5, 1.0)
        return interval * random.uniform(0.9, 1.1)

    def _loop(self) -> None:
        interval = self.config.interval_s
        next_check = time.monotonic() + random.uniform(0, min(interval, FIRST_CHECK_S)) if interval else None
        while True:
            with self._cond:
                while not self._stopping and not any(p.verdict for p in self._probes.values()):
                    timeout = None if next_check is None else next_check - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        break
                    self._cond.wait(timeout)
                if self._stopping:
                    return
            try:
                self._settle()
                if next_check is not None and time.monotonic() >= next_check:
                    self.check()
                    next_check = time.monotonic() + self._next_delay()
            except Exception:  # never let the updater thread die; the next round retries
                log.exception("updater round failed")
                next_check = None if next_check is None else time.monotonic() + self._next_delay()

