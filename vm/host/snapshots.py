"""The device's feature snapshots: which version of each is active, swapped atomically, persisted,
never moved backwards (docs/snapshots.md).

``activate`` takes snapshot bytes from anywhere (a local path, the update channel) and runs the one
trust gate, ``vm.bundle.snapshot.open_snapshot`` (signature before anything is decrypted or
parsed), then the version floor: a snapshot not newer than the highest version ever activated under
its name is refused (``Downgrade``), across restarts. With a directory, the file is written first
(temporary name, fsync, rename: ``vm.bundle.files``), then ``state.json`` the same way, so a
``kill -9`` leaves the old or the new snapshot active, never a broken one. Only then does the
in-memory view move: ``current()`` returns one immutable mapping, replaced whole, so a reader holds
either the old view or the new one. Readers never take the lock.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vm.bundle import files
from vm.bundle.keys import DeviceKeys
from vm.bundle.snapshot import SUFFIX, Snapshot, open_snapshot
from vm.bundle.versions import parse_version
from vm.errors import BadInput, Downgrade, EdgeError

log = logging.getLogger("edgevm.snapshots")
STATE_FILE = "state.json"
FORMAT = 1


class SnapshotStore:
    """The active snapshots of one runtime (thread-safe)."""

    def __init__(self, directory: Path | None, keys: DeviceKeys, *, max_bytes: int) -> None:
        self.dir = directory
        self.keys = keys
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # one activation at a time
        self._current: Mapping[str, Snapshot] = MappingProxyType({})
        self._highest: dict[str, str] = {}
        if directory is not None:
            self._restore(directory)

    def current(self) -> Mapping[str, Snapshot]:
        """The active snapshots: one immutable mapping (a call pins it once and reads only it)."""
        return self._current

    def list(self) -> list[dict[str, Any]]:
        return [s.info() for _, s in sorted(self._current.items())]

    def floor(self, name: str) -> str | None:
        """The highest version of ``name`` ever activated."""
        return self._highest.get(name)

    def activate(self, data: bytes, *, expect: tuple[str, str] | None = None) -> dict[str, Any]:
        """Verify, check the version floor, persist and swap in the snapshot ``data``; its info.
        The same bytes as the active version again are accepted and change nothing. ``expect``:
        the (name, version) the snapshot must be."""
        snap = open_snapshot(data, self.keys, max_size=self.max_bytes)
        if expect is not None and (snap.name, snap.version) != tuple(expect):
            raise BadInput(f"expected snapshot {expect[0]} {expect[1]}, got {snap.name} {snap.version}")
        with self._lock:
            active = self._current.get(snap.name)
            if active is not None and active.version == snap.version and active.body == snap.body:
                return snap.info()
            highest = self._highest.get(snap.name)
            if highest is not None and parse_version(snap.version) <= parse_version(highest):
                raise Downgrade(f"snapshot {snap.name} {snap.version} is not newer than {highest}, the highest "
                                f"version this device activated; refused")
            current = {**self._current, snap.name: snap}
            highest = {**self._highest, snap.name: snap.version}
            if self.dir is not None:  # the file, then the state naming it: each whole or not at all
                files.write_atomic(self._file(snap.name, snap.version), data)
                self._save(current, highest)
            self._highest = highest
            self._current = MappingProxyType(current)
            if self.dir is not None:
                self._prune(snap.name, snap.version)
        log.info("activated snapshot %s %s (%d bytes, %s)", snap.name, snap.version, len(data), snap.kind)
        return snap.info()

    # -- persistence -----------------------------------------------------------------------------
    def _file(self, name: str, version: str) -> Path:
        assert self.dir is not None
        return self.dir / name / f"{version}{SUFFIX}"

    def _save(self, current: Mapping[str, Snapshot], highest: Mapping[str, str]) -> None:
        assert self.dir is not None
        doc = {"format": FORMAT, "snapshots": {n: {"active": current[n].version if n in current else None,
                                                   "highest": h} for n, h in sorted(highest.items())}}
        files.write_atomic(self.dir / STATE_FILE, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())

    def _prune(self, name: str, keep: str) -> None:
        d = self.dir / name if self.dir is not None else None
        if d is None or not d.is_dir():
            return
        for p in d.iterdir():
            if p.name != f"{keep}{SUFFIX}":
                p.unlink(missing_ok=True)
        files.fsync_dir(d)

    def _restore(self, directory: Path) -> None:
        """Serve what the state names; a file that no longer verifies is logged and skipped (its
        floor stays: the next delivery must still be newer)."""
        try:
            doc = json.loads((directory / STATE_FILE).read_text())
            if doc.get("format") != FORMAT or not isinstance(doc.get("snapshots"), dict):
                raise ValueError(f"state format {doc.get('format')!r}")
            entries = {str(n): (e.get("active"), e.get("highest")) for n, e in doc["snapshots"].items()}
            for active, highest in entries.values():
                for v in (active, highest):
                    if v is not None:
                        parse_version(v)
        except FileNotFoundError:
            return
        except (ValueError, AttributeError, BadInput) as exc:
            log.error("snapshot state in %s is damaged (%s); starting without snapshots", directory, exc)
            return
        current: dict[str, Snapshot] = {}
        for name, (active, highest) in entries.items():
            if highest is not None:
                self._highest[name] = highest
            if active is None:
                continue
            path = self._file(name, active)
            try:
                snap = open_snapshot(path.read_bytes(), self.keys, max_size=self.max_bytes)
                if (snap.name, snap.version) != (name, active):
                    raise BadInput(f"{path} holds snapshot {snap.name} {snap.version}")
            except (OSError, EdgeError) as exc:
                log.error("snapshot %s %s does not load (%s); not served", name, active, exc)
                continue
            current[name] = snap
        self._current = MappingProxyType(current)

