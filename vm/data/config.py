"""The runtime's ``data`` option: where the event store lives, its tables and its limits."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vm.bundle.tables import TableSpec, parse_tables
from vm.errors import BadInput

DURABILITY = ("batched", "durable")
_LIMITS: dict[str, tuple[int, int, int]] = {   # option: (default, lo, hi)
    "commit_ms": (20, 1, 60_000),
    "ring_events": (4096, 0, 1 << 20),
    "max_event_bytes": (64 << 10, 64, 16 << 20),
    "max_query_rows": (100_000, 1, 10_000_000),
    "max_pending": (100_000, 1, 10_000_000),
    "prune_interval_ms": (60_000, 10, 86_400_000),
}
DOCS = {
    "dir": "directory of the store's files, one SQLite database per table (required)",
    "tables": "the host app's tables: {name: {fields, sensitive, indexes, max_age_ms, max_rows}} (docs/data.md)",
    "durability": "'batched': a writer thread commits every commit_ms; 'durable': track() returns after the "
                  "event's commit reached the disk (fsync)",
    "commit_ms": "batched mode: group commit interval",
    "ring_events": "recent events of each table kept in memory for trailing-window queries (0: none)",
    "max_event_bytes": "largest event accepted, as its values' encoded size",
    "max_query_rows": "most rows one query or SQL call returns",
    "max_pending": "batched mode: accepted, not yet committed events per table before track() refuses",
    "prune_interval_ms": "how often retention (max_age_ms, max_rows) is applied in the background",
}


@dataclass(frozen=True)
class DataConfig:
    """A validated ``data`` option (see ``from_config`` and docs/data.md)."""

    dir: Path
    tables: Mapping[str, TableSpec] = field(default_factory=dict)
    durability: str = "batched"
    commit_ms: int = 20
    ring_events: int = 4096
    max_event_bytes: int = 64 << 10
    max_query_rows: int = 100_000
    max_pending: int = 100_000
    prune_interval_ms: int = 60_000

    @classmethod
    def from_config(cls, doc: Any) -> DataConfig:
        """Validate the ``data`` mapping; ``BadInput`` names what is wrong."""
        if not isinstance(doc, Mapping):
            raise BadInput(f"config 'data' must be an object, got {type(doc).__name__}")
        unknown = sorted(str(k) for k in doc if k not in DOCS)
        if unknown:
            raise BadInput(f"config 'data': unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(DOCS))})")
        if not isinstance(doc.get("dir"), (str, Path)) or not str(doc.get("dir")):
            raise BadInput(f"config 'data.dir' is required: {DOCS['dir']}")
        values: dict[str, Any] = {"dir": Path(doc["dir"]),
                                  "tables": parse_tables(doc.get("tables", {}), "config 'data.tables'")}
        durability = doc.get("durability", "batched")
        if durability not in DURABILITY:
            raise BadInput(f"config 'data.durability' must be one of {', '.join(DURABILITY)}, got {durability!r}")
        values["durability"] = durability
        for name, (_, lo, hi) in _LIMITS.items():
            if name in doc:
                v = doc[name]
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise BadInput(f"config 'data.{name}' must be an integer in [{lo}, {hi}], got {v!r}")
                values[name] = v
        return cls(**values)
