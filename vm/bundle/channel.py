"""The update channel's layout and its targets' ``custom`` fields: what ``edgevm publish`` writes
(``vm.tools.publish``) and what the device's updater reads (``vm.update``), written once.

A channel is a directory served as it is (any static HTTP server or CDN, or a plain path):

    metadata/root.json, metadata/N.root.json      the root role (the device ships a root.json)
    metadata/timestamp.json                        the only file replaced in place (renamed, last)
    metadata/N.snapshot.json, metadata/N.targets.json   consistent snapshots: never overwritten
    targets/NAME/SHA256.VERSION.evb                each bundle once, named by its content hash
    targets/snapshots/NAME/SHA256.VERSION.evs      each feature snapshot once (docs/snapshots.md)

A target's TUF path is ``NAME/VERSION.evb``; its ``custom`` field holds ``{"edgevm": {...}}``:
the bundle's name and version, the rollout in basis points (``rollout_bp``, 0..10000: TUF's
canonical JSON has no floats), the device classes it is for (empty: all), the lowest runtime
version that may run it, its A/B groups (``ab``: group name -> basis points, summing to 10000;
absent or empty: no A/B test), and for a re-issue (``edgevm channel rollback``) the version whose
contents it holds (``reissue_of``; the device does not read it). A feature snapshot's target path
is ``snapshots/NAME/VERSION.evs`` and its custom field ``{"edgevm": {"kind": "snapshot", "name":
..., "version": ...}}`` (``SnapshotOffer``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vm.bundle.versions import parse_version
from vm.errors import BadInput

METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
CUSTOM_KEY = "edgevm"
HASH_ALGORITHM = "sha256"


SNAPSHOT_KIND = "snapshot"


def target_path(name: str, version: str) -> str:
    """The TUF target path of bundle ``name`` ``version``."""
    return f"{name}/{version}.evb"


def snapshot_target_path(name: str, version: str) -> str:
    """The TUF target path of feature snapshot ``name`` ``version``."""
    return f"snapshots/{name}/{version}.evs"


def is_snapshot(custom: Any) -> bool:
    """Whether a target's ``custom`` field marks a feature snapshot (not a bundle)."""
    doc = custom.get(CUSTOM_KEY) if isinstance(custom, dict) else None
    return isinstance(doc, dict) and doc.get("kind") == SNAPSHOT_KIND


@dataclass(frozen=True)
class SnapshotOffer:
    """One published feature snapshot version, as its target's custom fields describe it."""

    name: str
    version: str

    def to_custom(self) -> dict[str, Any]:
        return {CUSTOM_KEY: {"kind": SNAPSHOT_KIND, "name": self.name, "version": self.version}}

    @classmethod
    def from_custom(cls, path: str, custom: Any) -> SnapshotOffer:
        """Validate a snapshot target's ``custom`` field."""
        doc = custom.get(CUSTOM_KEY) if isinstance(custom, dict) else None
        if not isinstance(doc, dict) or doc.get("kind") != SNAPSHOT_KIND:
            raise BadInput(f"target {path}: not a snapshot target")
        return cls(*_name_version(path, doc, snapshot_target_path))


@dataclass(frozen=True)
class Offer:
    """One published bundle version, as its target's custom fields describe it."""

    name: str
    version: str
    rollout: float = 100.0
    device_classes: tuple[str, ...] = ()
    min_runtime: str | None = None
    reissue_of: str | None = None
    ab: tuple[tuple[str, int], ...] = ()  # (group, basis points), sorted by group; empty: no A/B

    @property
    def rollout_bp(self) -> int:
        """The rollout in basis points: devices whose bucket (0..9999) is below it take the bundle."""
        return round(self.rollout * 100)

    def to_custom(self) -> dict[str, Any]:
        """The target's ``custom`` field."""
        doc = {"name": self.name, "version": self.version, "rollout_bp": self.rollout_bp,
               "device_classes": list(self.device_classes), "min_runtime": self.min_runtime, "ab": dict(self.ab)}
        if self.reissue_of is not None:
            doc["reissue_of"] = self.reissue_of
        return {CUSTOM_KEY: doc}

    @classmethod
    def from_custom(cls, path: str, custom: Any) -> Offer:
        """Validate a target's ``custom`` field (signed by the targets role, still checked: a bug in
        the publisher must not crash a device)."""
        doc = custom.get(CUSTOM_KEY) if isinstance(custom, dict) else None
        if not isinstance(doc, dict):
            raise BadInput(f"target {path}: no {CUSTOM_KEY!r} custom field")
        name, version = _name_version(path, doc, target_path)
        bp = doc.get("rollout_bp", 10_000)
        if isinstance(bp, bool) or not isinstance(bp, int) or not 0 <= bp <= 10_000:
            raise BadInput(f"target {path}: rollout_bp must be a whole number in [0, 10000], got {bp!r}")
        classes = doc.get("device_classes") or []
        min_runtime, reissue_of = doc.get("min_runtime"), doc.get("reissue_of")
        if reissue_of is not None:
            parse_version(reissue_of, f"target {path}: reissue_of")
        return cls(name=name, version=version, rollout=bp / 100,
                   device_classes=check_classes(classes, f"target {path}: device_classes"),
                   min_runtime=None if min_runtime is None else _runtime(min_runtime, path), reissue_of=reissue_of,
                   ab=check_ab(doc.get("ab") or {}, f"target {path}: ab"))


def _name_version(path: str, doc: dict[str, Any], path_of: Callable[[str, str], str]) -> tuple[str, str]:
    """A target's custom name and version, checked against its path (``path_of(name, version)``)."""
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        raise BadInput(f"target {path}: custom name and version must be strings")
    parse_version(version, f"target {path}: version")
    if path != path_of(name, version):
        raise BadInput(f"target {path} does not match its custom fields ({name} {version})")
    return name, version


def check_classes(value: Any, what: str = "device_classes") -> tuple[str, ...]:
    """A list of non-empty device class names."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) and c for c in value):
        raise BadInput(f"{what} must be a list of non-empty names, got {value!r}")
    return tuple(value)


MAX_AB_GROUP = 64  # characters of an A/B group name


def check_ab(value: Any, what: str = "ab") -> tuple[tuple[str, int], ...]:
    """A/B groups: a mapping of group names (1..64 printable characters) to basis points, each at
    least 1, summing to exactly 10000 (every device that takes the bundle is in one group); empty:
    no A/B test."""
    if not isinstance(value, dict):
        raise BadInput(f"{what} must map group names to basis points, got {value!r}")
    for group, bp in value.items():
        if not isinstance(group, str) or not 0 < len(group) <= MAX_AB_GROUP or not group.isprintable():
            raise BadInput(f"{what}: group names must be 1..{MAX_AB_GROUP} printable characters, got {group!r}")
        if isinstance(bp, bool) or not isinstance(bp, int) or not 1 <= bp <= 10_000:
            raise BadInput(f"{what}: group {group!r} needs a whole number of basis points in [1, 10000], got {bp!r}")
    if value and sum(value.values()) != 10_000:
        raise BadInput(f"{what}: the groups' shares must add up to 100% (10000 basis points), "
                       f"got {sum(value.values())}")
    return tuple(sorted(value.items()))


def _runtime(value: Any, path: str) -> str:
    parse_version(value, f"target {path}: min_runtime")
    return value
