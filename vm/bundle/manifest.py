"""A bundle's manifest (``bundle.json``), validated by one set of rules at pack and at load.

``edgevm pack`` validates the ``bundle.json`` an engineer wrote; the loader validates the manifest
a bundle carries, after its signature verified and its payload decrypted. Both use ``validate``,
so pack refuses everything a device would refuse. A packed manifest also holds what ``pack``
added (``modules``, ``quantization``).
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vm.bundle.tables import BundleEvents, parse_bundle_events
from vm.bundle.triggers import BundleTriggers, parse_bundle
from vm.bundle.versions import parse_version
from vm.errors import BadInput

NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
ENTRY_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*\Z")
DEFAULT_MIN_RUNTIME = "0.1"
# What an engineer writes in bundle.json, and what pack adds to it.
SOURCE_KEYS = frozenset({"name", "version", "system", "entries", "models", "triggers", "tasks", "min_runtime",
                         "snapshots", "events"})
PACKED_KEYS = frozenset({"modules", "quantization"})


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; ``doc`` is the document itself (what the bundle carries)."""

    name: str
    version: str
    system: str
    entries: dict[str, str]
    models: dict[str, str]
    min_runtime: str
    triggers: BundleTriggers
    doc: dict[str, Any]
    events: BundleEvents = BundleEvents(tables={})  # the host tables it reads, the tables it owns
    snapshots: tuple[str, ...] = ()  # the feature snapshots its scripts may read (edge.features)


def _unknown_keys(doc: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in doc if k not in known)
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    raise BadInput(f"{where}: unknown key(s) {', '.join(hints)}; known keys: {', '.join(sorted(known))}")


def validate(doc: Any, *, where: str = "bundle.json", packed: bool = False) -> Manifest:
    """Check every field of a manifest; ``BadInput`` says which and why. ``packed``: the manifest
    came out of a bundle (it may hold what pack added)."""
    if not isinstance(doc, dict):
        raise BadInput(f"{where} must be a JSON object")
    _unknown_keys(doc, SOURCE_KEYS | PACKED_KEYS if packed else SOURCE_KEYS, where)
    name = doc.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadInput(f"{where}: 'name' must be 1-128 characters of [A-Za-z0-9._-], got {name!r}")
    version = doc.get("version")
    parse_version(version, f"{where}: 'version'")
    min_runtime = doc.get("min_runtime", DEFAULT_MIN_RUNTIME)
    parse_version(min_runtime, f"{where}: 'min_runtime'")
    system = doc.get("system")
    if not isinstance(system, str) or not system:
        raise BadInput(f"{where}: 'system' must be a non-empty string")
    entries = doc.get("entries")
    if not isinstance(entries, dict) or not entries:
        raise BadInput(f"{where}: 'entries' must map business codes to 'module:function'")
    for business, spec in entries.items():
        if not isinstance(business, str) or not business:
            raise BadInput(f"{where}: business codes must be non-empty strings, got {business!r}")
        if not isinstance(spec, str) or not ENTRY_RE.match(spec):
            raise BadInput(f"{where}: entry {business!r} must be 'module:function', got {spec!r}")
    models = doc.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in models.items()):
        raise BadInput(f"{where}: 'models' must map model names to file names")
    snapshots = doc.get("snapshots", [])
    if not isinstance(snapshots, list) or not all(isinstance(s, str) and NAME_RE.match(s) for s in snapshots) \
            or len(set(snapshots)) != len(snapshots):
        raise BadInput(f"{where}: 'snapshots' must list distinct snapshot names of [A-Za-z0-9._-], got {snapshots!r}")
    events = parse_bundle_events(doc.get("events"))
    unknown = sorted(set(events.prefetch or ()) - set(entries))
    if unknown:
        raise BadInput(f"{where}: 'events.prefetch' names no entry: {', '.join(map(repr, unknown))}")
    return Manifest(name=name, version=version, system=system, entries=dict(entries), models=dict(models),
                    min_runtime=min_runtime, triggers=parse_bundle(doc, entries), doc=doc,
                    snapshots=tuple(snapshots), events=events)
