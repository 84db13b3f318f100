"""The update channel's layout and its targets' ``custom`` fields: what ``edgevm publish`` writes
(``vm.tools.publish``) and what the device's updater reads (``vm.update``), written once.

A channel is a directory served as it is (any static HTTP server or CDN, or a plain path):

    metadata/root.json, metadata/N.root.json      the root role (the device ships a root.json)
    metadata/timestamp.json                        the only file replaced in place (renamed, last)
    metadata/N.snapshot.json, metadata/N.targets.json   consistent snapshots: never overwritten
    targets/NAME/SHA256.VERSION.evb                each bundle once, named by its content hash

A target's TUF path is ``NAME/VERSION.evb``; its ``custom`` field holds ``{"edgevm": {...}}``:
the bundle's name and version, the rollout in basis points (``rollout_bp``, 0..10000: TUF's
canonical JSON has no floats), the device classes it is for (empty: all), the lowest runtime
version that may run it, and its A/B groups (``ab``: group name -> basis points, summing to
10000; absent or empty: no A/B test).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vm.bundle.versions import parse_version
from vm.errors import BadInput

METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
CUSTOM_KEY = "edgevm"
HASH_ALGORITHM = "sha256"


def target_path(name: str, version: str) -> str:
    """The TUF target path of bundle ``name`` ``version``."""
    return f"{name}/{version}.evb"


@dataclass(frozen=True)
class Offer:
    """One published bundle version, as its target's custom fields describe it."""

    name: str
    version: str
    rollout: float = 100.0
    device_classes: tuple[str, ...] = ()
    min_runtime: str | None = None
    ab: tuple[tuple[str, int], ...] = ()  # (group, basis points), sorted by group; empty: no A/B

    @property
    def rollout_bp(self) -> int:
        """The rollout in basis points: devices whose bucket (0..9999) is below it take the bundle."""
        return round(self.rollout * 100)

    def to_custom(self) -> dict[str, Any]:
        """The target's ``custom`` field."""
        return {CUSTOM_KEY: {"name": self.name, "version": self.version, "rollout_bp": self.rollout_bp,
                             "device_classes": list(self.device_classes), "min_runtime": self.min_runtime,
                             "ab": dict(self.ab)}}

    @classmethod
    def from_custom(cls, path: str, custom: Any) -> Offer:
        """Validate a target's ``custom`` field (signed by the targets role, still checked: a bug in
        the publisher must not crash a device)."""
        doc = custom.get(CUSTOM_KEY) if isinstance(custom, dict) else None
        if not isinstance(doc, dict):
            raise BadInput(f"target {path}: no {CUSTOM_KEY!r} custom field")
        name, version = doc.get("name"), doc.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            raise BadInput(f"target {path}: custom name and version must be strings")
        parse_version(version, f"target {path}: version")
        if path != target_path(name, version):
            raise BadInput(f"target {path} does not match its custom fields ({name} {version})")
        bp = doc.get("rollout_bp", 10_000)
        if isinstance(bp, bool) or not isinstance(bp, int) or not 0 <= bp <= 10_000:
            raise BadInput(f"target {path}: rollout_bp must be a whole number in [0, 10000], got {bp!r}")
        classes = doc.get("device_classes") or []
        min_runtime = doc.get("min_runtime")
        return cls(name=name, version=version, rollout=bp / 100,
                   device_classes=check_classes(classes, f"target {path}: device_classes"),
                   min_runtime=None if min_runtime is None else _runtime(min_runtime, path),
                   ab=check_ab(doc.get("ab") or {}, f"target {path}: ab"))


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
