"""The runtime's ``update`` option: where the channel is, who this device is, and the limits."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vm.errors import BadInput

_DOCS = {
    "channel": "URL (http://, https://) or directory path of the channel (required)",
    "state_dir": "directory the updater owns: metadata, downloaded bundles, state.json (required)",
    "root": "the channel's trusted root.json shipped with the app (default: fallback_dir/root.json)",
    "fallback_dir": "bundles shipped with the app (*.evb), served before the first update and when the "
                    "channel is unreachable",
    "device_id": "stable id for the rollout bucket (default: a random id kept in state_dir)",
    "device_class": "this device's class, matched against a target's device classes",
    "interval_s": "seconds between background checks (0: only update_now())",
    "timeout_s": "connect and between-bytes timeout of a download",
    "download_timeout_s": "longest time one file may take to download",
    "probation_calls": "calls of a new version watched before it counts as good (M)",
    "probation_failures": "failures among them (timeouts, crashes, script errors) tolerated (N)",
    "crash_loop_restarts": "runs in a row that end without a clean shutdown while a new version is on "
                           "probation before the next start rolls it back (0: never)",
}


@dataclass(frozen=True)
class UpdateConfig:
    """A validated ``update`` option (see ``from_config`` and docs/ota.md)."""

    channel: str
    state_dir: Path
    root: Path
    fallback_dir: Path | None = None
    device_id: str | None = None
    device_class: str | None = None
    interval_s: float = 3600.0
    timeout_s: float = 30.0
    download_timeout_s: float = 300.0
    probation_calls: int = 20
    probation_failures: int = 2
    crash_loop_restarts: int = 3

    @classmethod
    def from_config(cls, doc: Any) -> UpdateConfig:
        """Validate the ``update`` mapping; ``BadInput`` names what is wrong."""
        if not isinstance(doc, Mapping):
            raise BadInput(f"config 'update' must be an object, got {type(doc).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in doc if k not in known)
        if unknown:
            raise BadInput(f"config 'update': unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        for need in ("channel", "state_dir"):
            if not isinstance(doc.get(need), (str, Path)) or not str(doc.get(need)):
                raise BadInput(f"config 'update.{need}' is required: {_DOCS[need]}")
        fallback = _path(doc, "fallback_dir")
        root = _path(doc, "root") or (fallback / "root.json" if fallback is not None else None)
        if root is None:
            raise BadInput("config 'update' needs 'root' (the channel's root.json) or a 'fallback_dir' holding one")
        values: dict[str, Any] = {"channel": str(doc["channel"]), "state_dir": Path(doc["state_dir"]),
                                  "root": root, "fallback_dir": fallback}
        for name in ("device_id", "device_class"):
            if doc.get(name) is not None:
                if not isinstance(doc[name], str) or not doc[name]:
                    raise BadInput(f"config 'update.{name}' must be a non-empty string")
                values[name] = doc[name]
        for name, lo, hi, kind in (("interval_s", 0, 86_400 * 30, float), ("timeout_s", 0.01, 3600, float),
                                   ("download_timeout_s", 0.01, 86_400, float), ("probation_calls", 1, 1 << 20, int),
                                   ("probation_failures", 0, 1 << 20, int), ("crash_loop_restarts", 0, 1000, int)):
            if name in doc:
                v = doc[name]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi \
                        or (kind is int and v != int(v)):
                    raise BadInput(f"config 'update.{name}' must be a number in [{lo}, {hi}], got {v!r}")
                values[name] = kind(v)
        return cls(**values)


def _path(doc: Mapping[str, Any], name: str) -> Path | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        raise BadInput(f"config 'update.{name}' must be a path")
    return Path(value)


OPTIONS: dict[str, str] = dict(_DOCS)
"""Every ``update`` sub-option and what it is for (docs/ota.md's table is checked against it)."""
