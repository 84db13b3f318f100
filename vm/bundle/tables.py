"""Event-store table declarations: one set of rules for the runtime config's tables (the host app's)
and a bundle's own tables (``bundle.json``'s ``events``), checked at pack, at load and at start.

A table declares its fields and their types, whether it is sensitive (its payload is sealed at
rest: only ``ts`` and the ``indexes`` fields stay in clear, for routing and indexing), and its
retention (``max_age_ms``, ``max_rows``)::

    {"clicks": {"fields": {"type": "str", "page_id": "str", "item_id": "int", "price": "float"},
                "sensitive": true, "indexes": ["type"], "max_age_ms": 604800000, "max_rows": 100000}}

Every event also has ``ts`` (int, milliseconds since the epoch). A bundle's ``events`` says which
host tables it reads and which tables of its own it keeps (``vm.data`` namespaces those to it)::

    {"events": {"reads": ["clicks"], "tables": {"scratch": {"fields": {"score": "float"}}}}}

An entry may also declare the reads it makes on every call (``prefetch``: business code -> a list of
``{table, window_ms, fields, where, limit}``, a trailing window of a table it may read): in process
isolation the host runs them before dispatch and sends the columns with the request, so the
script's ``edge.events.query`` of that window is answered in the worker without a round trip::

    {"events": {"reads": ["clicks"],
                "prefetch": {"rank": [{"table": "clicks", "window_ms": 600000, "fields": ["ts", "item_id"],
                                       "where": {"type": "click"}, "limit": 1000}]}}}
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vm.errors import BadInput

FIELD_TYPES = ("int", "float", "str", "bool")
TABLE_NAME_RE = re.compile(r"\A[a-z][a-z0-9_]{0,62}\Z")   # lower case: SQLite names ignore case
FIELD_NAME_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9_]{0,62}\Z")  # unique ignoring case (as SQLite compares)
RESERVED_FIELDS = frozenset({"ts", "table", "rowid", "oid", "_rowid_", "payload"})
MAX_FIELDS = 64
MAX_TABLES = 256
TABLE_KEYS = frozenset({"fields", "sensitive", "indexes", "max_age_ms", "max_rows"})
MAX_AGE_MS = 10 * 365 * 86_400_000
MAX_ROWS = 1 << 40


@dataclass(frozen=True)
class TableSpec:
    """One declared table; ``fields`` keeps the declared order (``ts`` is implicit)."""

    name: str
    fields: tuple[tuple[str, str], ...]
    sensitive: bool = False
    indexes: tuple[str, ...] = ()
    max_age_ms: int | None = None
    max_rows: int | None = None

    @property
    def clear(self) -> tuple[str, ...]:
        """Fields stored in clear: all of a plain table's, only the indexes of a sensitive one."""
        return self.indexes if self.sensitive else tuple(n for n, _ in self.fields)

    @property
    def sealed(self) -> tuple[str, ...]:
        """Fields stored only inside the sealed payload."""
        return tuple(n for n, _ in self.fields if n not in self.clear)


@dataclass(frozen=True)
class Prefetch:
    """One declared read of an entry: the latest ``window_ms`` of ``table`` (``query`` holds the
    rest of its arguments as ``edge.events.query`` takes them: fields, where, limit)."""

    table: str
    window_ms: int
    query: Mapping[str, Any]


@dataclass(frozen=True)
class BundleEvents:
    """A bundle's ``events``: the host tables it reads, the tables it owns, the reads its entries
    declare (business code -> prefetches)."""

    reads: tuple[str, ...] = ()
    tables: Mapping[str, TableSpec] | None = None
    prefetch: Mapping[str, tuple[Prefetch, ...]] | None = None


def _limit(doc: Mapping[str, Any], key: str, hi: int, where: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise BadInput(f"{where}: {key!r} must be an integer in [1, {hi}], got {value!r}")
    return value


def parse_table(name: Any, doc: Any, where: str) -> TableSpec:
    """Validate one table declaration."""
    if not isinstance(name, str) or not TABLE_NAME_RE.match(name):
        raise BadInput(f"{where}: table names are 1-63 characters of [a-z0-9_] starting with a letter, got {name!r}")
    where = f"{where}.{name}"
    if not isinstance(doc, Mapping):
        raise BadInput(f"{where} must be an object")
    unknown = sorted(str(k) for k in doc if k not in TABLE_KEYS)
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(TABLE_KEYS))})")
    raw = doc.get("fields")
    if not isinstance(raw, Mapping) or not raw or len(raw) > MAX_FIELDS:
        raise BadInput(f"{where}: 'fields' must map 1-{MAX_FIELDS} field names to one of {', '.join(FIELD_TYPES)}")
    fields = []
    for fname, ftype in raw.items():
        if (not isinstance(fname, str) or not FIELD_NAME_RE.match(fname) or fname.lower() in RESERVED_FIELDS
                or any(fname.lower() == f.lower() for f, _ in fields)):
            raise BadInput(f"{where}: field {fname!r} is not a valid name ([A-Za-z0-9_], unique ignoring case, "
                           f"not one of {', '.join(sorted(RESERVED_FIELDS))})")
        if ftype not in FIELD_TYPES:
            raise BadInput(f"{where}: field {fname!r} has type {ftype!r}; types are {', '.join(FIELD_TYPES)}")
        fields.append((fname, ftype))
    sensitive = doc.get("sensitive", False)
    if not isinstance(sensitive, bool):
        raise BadInput(f"{where}: 'sensitive' must be true or false")
    indexes = doc.get("indexes", [])
    if not isinstance(indexes, list) or any(i not in raw for i in indexes) or len(set(indexes)) != len(indexes):
        raise BadInput(f"{where}: 'indexes' must list distinct fields of the table, got {indexes!r}")
    return TableSpec(name=name, fields=tuple(fields), sensitive=sensitive, indexes=tuple(indexes),
                     max_age_ms=_limit(doc, "max_age_ms", MAX_AGE_MS, where),
                     max_rows=_limit(doc, "max_rows", MAX_ROWS, where))


def parse_tables(doc: Any, where: str) -> dict[str, TableSpec]:
    """Validate a mapping of table names to declarations."""
    if not isinstance(doc, Mapping) or len(doc) > MAX_TABLES:
        raise BadInput(f"{where} must map at most {MAX_TABLES} table names to declarations")
    return {name: parse_table(name, spec, where) for name, spec in doc.items()}


def parse_bundle_events(doc: Any, where: str = "bundle.json: 'events'") -> BundleEvents:
    """Validate a manifest's ``events`` (``{"reads": [...], "tables": {...}}``)."""
    if doc is None:
        return BundleEvents(tables={})
    if not isinstance(doc, Mapping) or set(doc) - {"reads", "tables", "prefetch"}:
        raise BadInput(f"{where} must be an object with 'reads' (host table names), 'tables' (declarations) "
                       "and 'prefetch' (the reads each entry makes on every call)")
    reads = doc.get("reads", [])
    if not isinstance(reads, list) or not all(isinstance(r, str) and TABLE_NAME_RE.match(r) for r in reads):
        raise BadInput(f"{where}: 'reads' must list table names, got {reads!r}")
    tables = parse_tables(doc.get("tables", {}), f"{where}.tables")
    overlap = sorted(set(reads) & set(tables))
    if overlap:
        raise BadInput(f"{where}: {', '.join(overlap)} both read from the host and declared as the bundle's own")
    prefetch = _parse_prefetch(doc.get("prefetch", {}), set(reads) | set(tables), f"{where}.prefetch")
    return BundleEvents(reads=tuple(dict.fromkeys(reads)), tables=tables, prefetch=prefetch)


MAX_PREFETCH = 8  # declared reads per entry
PREFETCH_KEYS = frozenset({"table", "window_ms", "fields", "where", "limit"})


def _parse_prefetch(doc: Any, readable: set[str], where: str) -> dict[str, tuple[Prefetch, ...]]:
    """Validate ``events.prefetch``: each read names a table the bundle reads or owns, a window,
    and plain ``query`` arguments (their fields and values are checked against the table where the
    table is known: at load)."""
    if not isinstance(doc, Mapping):
        raise BadInput(f"{where} must map business codes to lists of declared reads")
    out = {}
    for business, reads in doc.items():
        at = f"{where}.{business}"
        if not isinstance(business, str) or not isinstance(reads, list) or not 1 <= len(reads) <= MAX_PREFETCH:
            raise BadInput(f"{at} must be a list of 1-{MAX_PREFETCH} reads {{table, window_ms, fields, where, limit}}")
        parsed = []
        for read in reads:
            if not isinstance(read, Mapping) or set(read) - PREFETCH_KEYS:
                raise BadInput(f"{at}: a read is an object with {', '.join(sorted(PREFETCH_KEYS))}, got {read!r}")
            table = read.get("table")
            if table not in readable:
                raise BadInput(f"{at}: table {table!r} is neither read ('reads') nor owned ('tables') by the bundle")
            window = read.get("window_ms")
            if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_AGE_MS:
                raise BadInput(f"{at}: 'window_ms' must be an integer in [1, {MAX_AGE_MS}], got {window!r}")
            fields = read.get("fields")
            if fields is not None and (not isinstance(fields, list) or not all(
                    isinstance(f, str) and (f == "ts" or FIELD_NAME_RE.match(f)) for f in fields)):
                raise BadInput(f"{at}: 'fields' must list field names, got {fields!r}")
            filters = read.get("where")
            if filters is not None and not isinstance(filters, Mapping):
                raise BadInput(f"{at}: 'where' must map field names to a value or a list of values")
            parsed.append(Prefetch(table=table, window_ms=window, query={
                "fields": fields, "where": None if filters is None else dict(filters), "limit": read.get("limit")}))
        out[business] = tuple(parsed)
    return out
