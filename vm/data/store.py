"""The event store: a router sending each table to its own SQLite file, ingestion, queries, retention.

One file per table under the ``data`` option's ``dir`` (small files, no lock shared between
tables), each in WAL mode: readers never wait for the writer. A sensitive table keeps ``ts`` and
its ``indexes`` fields in clear columns and everything else in one sealed payload column
(``vm.data.sealed``); a plain table keeps every field in a column. ``track`` validates the whole
event before anything is written (a bad event is refused and counted, never half-written), then
either commits it before returning (``durable``: WAL with ``synchronous=FULL``, fsync per commit)
or queues it for the writer thread's next group commit (``batched``). Every event also enters the
table's ring (``vm.data.ring``), which answers queries whose window it covers. A background thread
commits the batches and applies retention in small deletes, each its own transaction.

Scripts reach tables through an ``Access`` (one per loaded bundle): the host tables its manifest
reads, and its own tables (namespaced to it: ``<bundle>/<table>``, files ``bundle-<bundle>--<table>.db``),
which only it reads and writes.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vm.bundle.keys import DeviceKeys
from vm.bundle.tables import BundleEvents, Prefetch, TableSpec
from vm.data.config import DataConfig
from vm.data.ring import Ring
from vm.data.sealed import Sealer
from vm.data.sql import ReadOnlySQL
from vm.errors import BadInput, EdgeError, NotFound, PolicyError, ResourceExhausted, Timeout

log = logging.getLogger("edgevm.data")
SQL_TYPES = {"int": "INTEGER", "float": "REAL", "str": "TEXT", "bool": "INTEGER"}
PY_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
NP_TYPES = {"int": np.int64, "float": np.float64, "bool": np.bool_}
INT64 = (-(1 << 63), (1 << 63) - 1)
EARLY_COMMIT = 4096      # queued events of one table that start its commit before commit_ms
PRUNE_CHUNK = 5000       # rows one retention delete removes (one short write transaction)
PROGRESS_OPS = 1000      # SQLite VM steps between deadline checks


def wall_ms() -> int:
    """The wall clock in milliseconds since the epoch (the store's clock on a device)."""
    return time.time_ns() // 1_000_000


def _check_value(table: str, name: str, ftype: str, value: Any) -> Any:
    """``value`` as the exact type of field ``name``, or ``BadInput``."""
    t = type(value)
    if ftype == "str" and t is str:
        return value
    if ftype == "int" and t is int and INT64[0] <= value <= INT64[1]:
        return value
    if ftype == "float" and (t is float or t is int and INT64[0] <= value <= INT64[1]):
        return float(value)
    if ftype == "bool" and t is bool:
        return value
    raise BadInput(f"table {table}: field {name!r} must be {ftype}, got {t.__name__}"
                   + (" out of the int64 range" if t is int else ""))


def storage_error(exc: sqlite3.Error, what: str) -> EdgeError:
    """The typed error for a failed write: a full disk (or file size limit) is ``resource``."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return ResourceExhausted(f"{what}: the disk is full or the file cannot grow ({exc})")
    return ResourceExhausted(f"{what}: the store could not write ({exc})")


class _Table:
    """One table: its file, its writer connection, idle reader connections, pending events, ring."""

    def __init__(self, key: str, spec: TableSpec, path: Path, keys: DeviceKeys, cfg: DataConfig, *,
                 owner: str | None, clock: Callable[[], int]) -> None:
        self.key, self.spec, self.path, self.owner = key, spec, path, owner
        self.clock = clock
        self.cfg = cfg
        self.lock = threading.Lock()      # pending, error, ring order
        self.wlock = threading.Lock()     # the writer connection
        self.pending: list[tuple] = []
        self.error: EdgeError | None = None
        self.counts = {"stored": 0, "refused": 0, "pruned": 0, "commit_failures": 0}
        self._readers: list[sqlite3.Connection] = []
        self.types = dict(spec.fields)
        self.checks = tuple((n, t, PY_TYPES[t]) for n, t in spec.fields)
        self._plans: dict[tuple, tuple[str, tuple[str, ...], dict[str, tuple]]] = {}
        self.clear = spec.clear
        self.sealed_fields = spec.sealed
        self.conn = self._connect()
        self.sealer = self._schema(keys)
        cols = ["ts", *self.clear, *(["payload"] if spec.sensitive else [])]
        self.insert_sql = (f"INSERT INTO events ({', '.join(_q(c) for c in cols)}) "
                           f"VALUES ({', '.join('?' * len(cols))})")
        top = self.conn.execute("SELECT max(ts) FROM events").fetchone()[0]
        floor = -1 if top is None else int(top)  # ts >= 0: a fresh table's ring holds all of it
        self.ring = Ring(spec, _ring_size(cfg.ring_events, spec), floor) if cfg.ring_events else None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.cfg.durability == 'durable' else 'NORMAL'}")
        conn.execute("PRAGMA temp_store=MEMORY")  # no plaintext in temporary files
        return conn

    def _schema(self, keys: DeviceKeys) -> Sealer | None:
        """Create the table, or check the file holds this declaration; the sealer of a sensitive one."""
        spec = self.spec
        doc = json.dumps({"fields": spec.fields, "sensitive": spec.sensitive, "indexes": spec.indexes})
        c = self.conn
        c.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB)")
        row = c.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
        if row is not None and row[0] != doc:
            if self.owner is None:
                raise BadInput(f"table {spec.name}: {self.path} holds another declaration of it ({row[0]}); "
                               "rename the table or remove the file to change its fields")
            log.info("bundle %s changed table %s: its old rows are dropped", self.owner, spec.name)
            c.execute("DROP TABLE IF EXISTS events")
            c.execute("DELETE FROM meta")
            row = None
        key_row = c.execute("SELECT v FROM meta WHERE k = 'key_id'").fetchone()
        sealer = Sealer(keys, self.path.name, key_row[0] if key_row else None) if spec.sensitive else None
        if row is None:
            cols = ", ".join(f"{_q(n)} {SQL_TYPES[self.types[n]]}" for n in self.clear)
            c.execute("BEGIN IMMEDIATE")
            c.execute(f"CREATE TABLE events (ts INTEGER NOT NULL{', ' + cols if cols else ''}"
                      f"{', payload BLOB NOT NULL' if spec.sensitive else ''})")
            c.execute("CREATE INDEX events_ts ON events (ts)")
            for f in spec.indexes:
                c.execute(f"CREATE INDEX {_q('events_' + f)} ON events ({_q(f)}, ts)")
            c.execute("INSERT INTO meta VALUES ('schema', ?)", (doc,))
            if sealer is not None:
                c.execute("INSERT INTO meta VALUES ('key_id', ?)", (sealer.key_id,))
            c.execute("COMMIT")
        return sealer

    # -- writing -----------------------------------------------------------------------------

    def row(self, event: Mapping[str, Any], now_ms: int) -> tuple[int, dict[str, Any], tuple]:
        """Validate one event (all of it, before anything is written): its ts, values and SQL row."""
        spec = self.spec
        ts = event.get("ts", now_ms)
        if type(ts) is not int or not 0 <= ts <= INT64[1]:
            raise BadInput(f"table {spec.name}: 'ts' must be a non-negative int (milliseconds), got {ts!r}")
        values: dict[str, Any] = {}
        size = 0
        for name, ftype, exact in self.checks:
            try:
                value = event[name]
            except KeyError:
                raise BadInput(f"table {spec.name}: the event has no field {name!r}") from None
            if type(value) is not exact or exact is int:  # ints: the int64 range; floats: ints accepted
                value = _check_value(spec.name, name, ftype, value)
            values[name] = value
            size += _size(value)
        extra = len(event) - len(values) - ("ts" in event) - ("table" in event)
        if extra:
            known = {"ts", "table", *values}
            raise BadInput(f"table {spec.name}: unknown field(s) "
                           f"{', '.join(sorted(repr(k) for k in event if k not in known))}")
        message = None
        if self.sealer is not None:  # the sealed fields count as their encoded message (ts included)
            message = self.sealer.message(ts, [values[n] for n in self.sealed_fields])
            size = len(message) + sum(_size(values[n]) for n in self.clear)
        if size > self.cfg.max_event_bytes:
            raise BadInput(f"table {spec.name}: an event of {size} bytes exceeds the limit of "
                           f"{self.cfg.max_event_bytes} (config 'data.max_event_bytes')", detail={"reason": "oversized"})
        sql_row = (ts, *[values[n] for n in self.clear],
                   *((self.sealer.seal(message),) if self.sealer is not None and message is not None else ()))
        return ts, values, sql_row

    def add(self, ts: int, values: dict[str, Any], sql_row: tuple) -> int:
        """Store a validated event: committed now (durable) or queued for the next group commit;
        how many events wait for that commit (0: durable)."""
        if self.cfg.durability == "durable":
            with self.wlock:
                try:
                    self.conn.execute(self.insert_sql, sql_row)
                except sqlite3.Error as exc:
                    self.counts["commit_failures"] += 1
                    raise storage_error(exc, f"table {self.spec.name}") from None
            with self.lock:
                self.counts["stored"] += 1
                if self.ring is not None:
                    self.ring.append(ts, values)
            return 0
        with self.lock:
            if self.error is not None or len(self.pending) >= self.cfg.max_pending:
                raise self.error or ResourceExhausted(
                    f"table {self.spec.name}: {len(self.pending)} events wait for a commit (config 'data.max_pending')")
            self.pending.append(sql_row)
            if self.ring is not None:
                self.ring.append(ts, values)
            return len(self.pending)

    def flush(self) -> None:
        """Commit the queued events in one transaction; on failure they stay queued, and ``track``
        refuses new ones with the error until a commit succeeds."""
        with self.wlock:  # taken first: a reader's flush waits for a commit in progress
            with self.lock:
                rows, self.pending = self.pending, []
            if not rows:
                return
            try:
                self.conn.execute("BEGIN")
                self.conn.executemany(self.insert_sql, rows)
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                with self.lock:
                    self.pending[:0] = rows
                    self.error = storage_error(exc, f"table {self.spec.name}")
                    self.counts["commit_failures"] += 1
                return
        with self.lock:
            self.error = None
            self.counts["stored"] += len(rows)

    def prune(self, now_ms: int) -> int:
        """Apply retention in chunks, each its own short transaction (readers never wait: WAL)."""
        spec = self.spec
        removed = 0
        while True:
            with self.wlock:
                try:
                    by_age = 0 if spec.max_age_ms is None else self.conn.execute(
                        "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE ts < ? LIMIT ?)",
                        (now_ms - spec.max_age_ms, PRUNE_CHUNK)).rowcount
                    by_rows = 0 if spec.max_rows is None else self.conn.execute(
                        "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE rowid <= "
                        "(SELECT rowid FROM events ORDER BY rowid DESC LIMIT 1 OFFSET ?) "
                        "ORDER BY rowid LIMIT ?)", (spec.max_rows, PRUNE_CHUNK)).rowcount
                except sqlite3.Error as exc:
                    log.warning("retention of table %s: %s", self.key, exc)
                    break
            removed += by_age + by_rows
            if by_age < PRUNE_CHUNK and by_rows < PRUNE_CHUNK:
                break
        if removed:
            with self.lock:
                self.counts["pruned"] += removed
        return removed

    def empty(self) -> None:
        """Delete every event, committed or queued, and empty the ring (a new device's table)."""
        with self.wlock:
            with self.lock:
                self.pending = []
                self.error = None
                if self.ring is not None:
                    self.ring = Ring(self.spec, self.ring.capacity, -1)
            try:
                self.conn.execute("DELETE FROM events")
            except sqlite3.Error as exc:
                raise storage_error(exc, f"table {self.spec.name}") from None

    # -- reading -----------------------------------------------------------------------------

    def reader(self) -> _Reader:
        with self.lock:
            if self._readers:
                return self._readers.pop()
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, factory=_Reader)
        conn.execute("PRAGMA query_only=1")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.set_progress_handler(conn.expired, PROGRESS_OPS)
        return conn

    def give_back(self, conn: _Reader) -> None:
        conn.deadline = float("inf")
        with self.lock:
            self._readers.append(conn)

    def select(self, q: Query, deadline: float) -> dict[str, np.ndarray]:
        """Run a checked query: from the ring when it covers the window, else from the file."""
        if self.spec.max_age_ms is not None:  # what retention removes is never returned, pruned yet or not
            oldest = self.clock() - self.spec.max_age_ms
            q.since_ms = oldest if q.since_ms is None else max(q.since_ms, oldest)
        ring = self.ring
        if ring is not None and ring.covers(0 if q.since_ms is None else q.since_ms):
            return ring.select(0 if q.since_ms is None else q.since_ms, q.until_ms, q.where, q.fields, q.limit)
        self.flush()  # a disk read sees every event track() accepted (and waits for a commit under way)
        return self._select_disk(q, deadline)

    def _plan(self, q: Query) -> tuple[str, tuple[str, ...], dict[str, tuple]]:
        """The statement for a query's shape (which bounds, filters and fields: not their values),
        the columns it selects, and the filters on sealed fields (applied after opening); built once
        per shape, so the connection's statement cache finds it prepared."""
        shape = (q.since_ms is None, q.until_ms is None, tuple((n, len(v)) for n, v in q.where.items()), q.fields)
        plan = self._plans.get(shape)
        if plan is not None:
            return plan
        cond = []
        if q.since_ms is not None:
            cond.append("ts >= ?")
        if q.until_ms is not None:
            cond.append("ts < ?")
        sealed_where = {}
        for name, allowed in q.where.items():
            if name in self.clear:
                cond.append(f"{_q(name)} IN ({', '.join('?' * len(allowed))})")
            else:
                sealed_where[name] = allowed
        need_sealed = bool(sealed_where) or any(f in self.sealed_fields for f in q.fields)
        cols = ("ts", *[f for f in q.fields if f in self.clear and f != "ts"], *(["payload"] if need_sealed else []))
        sql = f"SELECT {', '.join(_q(c) for c in cols)} FROM events"
        if cond:
            sql += " WHERE " + " AND ".join(cond)
        sql += " ORDER BY ts DESC, rowid DESC"  # the ts index's own order: the latest first, no sort
        if not sealed_where:
            sql += " LIMIT ?"
        if len(self._plans) >= 64:
            self._plans.clear()
        plan = self._plans[shape] = (sql, cols, {n: () for n in sealed_where})
        return plan

    def _select_disk(self, q: Query, deadline: float) -> dict[str, np.ndarray]:
        sql, cols, sealed = self._plan(q)
        params: list[Any] = [v for v in (q.since_ms, q.until_ms) if v is not None]
        for name, allowed in q.where.items():
            if name not in sealed:
                params.extend(allowed)
        if not sealed:
            params.append(q.limit)
        conn = self.reader()
        try:
            conn.deadline = deadline
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if time.monotonic() > deadline:
                raise Timeout(f"query of table {self.spec.name} did not finish before the call's deadline") \
                    from None
            raise ResourceExhausted(f"query of table {self.spec.name} failed: {exc}") from None
        finally:
            self.give_back(conn)
        rows.reverse()
        # one transposition in C, then one numpy array per column (no per-value Python loop)
        columns = dict(zip(cols, zip(*rows, strict=True), strict=True)) if rows else dict.fromkeys(cols, ())
        if "payload" in columns:
            opened = list(map(self.sealer.open, columns["ts"], columns.pop("payload")))  # type: ignore[union-attr]
            columns.update(zip(self.sealed_fields, zip(*opened, strict=True), strict=True) if opened
                           else dict.fromkeys(self.sealed_fields, ()))
            if sealed:
                keep = [i for i in range(len(rows))
                        if all(columns[n][i] in q.where[n] for n in sealed)][-q.limit:]
                columns = {n: [v[i] for i in keep] for n, v in columns.items()}
        return {name: _array(columns[name], "int" if name == "ts" else self.types[name]) for name in q.fields}

    def close(self) -> None:
        with self.wlock:
            self.conn.close()
        with self.lock:
            for r in self._readers:
                r.close()
            self._readers.clear()


class Query:
    """A checked ``edge.events.query``: every part validated as hostile input against the table."""

    __slots__ = ("since_ms", "until_ms", "where", "fields", "limit")

    def __init__(self, table: _Table, spec: Mapping[str, Any], max_rows: int) -> None:
        name = table.spec.name
        unknown = set(spec) - {"since_ms", "until_ms", "where", "fields", "limit"}
        if unknown:
            raise BadInput(f"query of {name}: unknown argument(s) {', '.join(sorted(map(repr, unknown)))}")
        self.since_ms = _opt_int(spec.get("since_ms"), "since_ms")
        self.until_ms = _opt_int(spec.get("until_ms"), "until_ms")
        limit = spec.get("limit")
        limit = max_rows if limit is None else _opt_int(limit, "limit")
        if not 1 <= limit <= max_rows:
            raise BadInput(f"query of {name}: 'limit' must be in [1, {max_rows}], got {limit}")
        self.limit = limit
        fields = spec.get("fields")
        if fields is None:
            self.fields = ("ts", *table.types)
        else:
            if type(fields) not in (list, tuple) or not all(type(f) is str for f in fields):
                raise BadInput(f"query of {name}: 'fields' must be a list of field names")
            bad = [f for f in fields if f != "ts" and f not in table.types]
            if bad:
                raise BadInput(f"query of {name}: no field(s) {', '.join(map(repr, bad))} "
                               f"(fields: ts, {', '.join(table.types)})")
            self.fields = tuple(dict.fromkeys(fields))
        where = spec.get("where") or {}
        if type(where) is not dict:
            raise BadInput(f"query of {name}: 'where' must be a dict of field: value or [values]")
        self.where: dict[str, tuple] = {}
        for field, value in where.items():
            if type(field) is not str or field not in table.types:
                raise BadInput(f"query of {name}: 'where' names no field of the table: {field!r}")
            allowed = tuple(value) if type(value) in (list, tuple) else (value,)
            if not 1 <= len(allowed) <= 1000:
                raise BadInput(f"query of {name}: 'where' {field!r} needs 1 to 1000 values")
            self.where[field] = tuple(_check_value(name, field, table.types[field], v) for v in allowed)


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not INT64[0] <= value <= INT64[1]:
        raise BadInput(f"query: {what!r} must be an int, got {type(value).__name__}")
    return value


class EventStore:
    """The tables of one runtime and the thread that commits and prunes them."""

    def __init__(self, cfg: DataConfig, keys: DeviceKeys) -> None:
        self.cfg = cfg
        self.keys = keys
        self.clock: Callable[[], int] = wall_ms  # ms since the epoch: retention's and a missing ts's "now"
        cfg.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._tables: dict[str, _Table] = {}
        self._refused: dict[str, int] = {}
        self._closed = False
        try:
            for name, spec in cfg.tables.items():
                self._tables[name] = self._open(name, spec, owner=None)
        except sqlite3.Error as exc:
            self.close()
            raise storage_error(exc, f"opening the event store in {cfg.dir}") from None
        except BaseException:
            self.close()
            raise
        self._queued = threading.Event()  # an event was queued (or close): the writer thread wakes
        self._full = threading.Event()    # a queue reached EARLY_COMMIT (or close): commit now
        self._thread = threading.Thread(target=self._run, name="edgevm-events", daemon=True)
        self._thread.start()

    def _open(self, key: str, spec: TableSpec, *, owner: str | None) -> _Table:
        file = f"{key}.db" if owner is None else f"bundle-{owner}--{spec.name}.db"
        return _Table(key, spec, self.cfg.dir / file, self.keys, self.cfg, owner=owner, clock=lambda: self.clock())

    # -- bundles -----------------------------------------------------------------------------

    def access(self, bundle: str, events: BundleEvents) -> Access:
        """Open (or create) ``bundle``'s own tables; what its scripts may read and write."""
        own = {}
        for name, spec in (events.tables or {}).items():
            key = f"{bundle}/{name}"
            with self._lock:
                table = self._tables.get(key)
            if table is None or table.spec != spec:
                try:
                    new = self._open(key, spec, owner=bundle)
                except sqlite3.Error as exc:
                    raise storage_error(exc, f"opening table {name} of bundle {bundle}") from None
                with self._lock:
                    old, self._tables[key] = self._tables.get(key), new
                if old is not None:
                    old.flush()
                    old.close()
                table = new
            own[name] = table
        return Access(self, bundle, events.reads, own, events.prefetch or {})

    # -- ingestion ---------------------------------------------------------------------------

    def track(self, event: Mapping[str, Any]) -> bool:
        """Store a tracked event in the table it names (``event["table"]``); False if it names
        none (it only fires triggers). A bad event is refused with ``BadInput`` and counted."""
        name = event.get("table")
        if name is None:
            return False
        table = self._tables.get(name) if type(name) is str else None
        if table is None or table.owner is not None:
            self.count_refused("unknown_table")
            raise BadInput(f"no table {name!r} is declared (config 'data.tables': "
                           f"{', '.join(sorted(self.cfg.tables)) or 'none'})")
        self.write(table, event)
        return True

    def write(self, table: _Table, event: Mapping[str, Any]) -> None:
        """Validate and store one event in ``table``."""
        if self._closed:
            raise ResourceExhausted("the event store is closed")
        try:
            ts, values, row = table.row(event, self.clock())
        except BadInput as exc:
            with table.lock:
                table.counts["refused"] += 1
            self.count_refused(exc.detail.get("reason", "invalid_event"))
            raise
        waiting = table.add(ts, values, row)
        if waiting == 1:
            self._queued.set()  # the writer thread sleeps until a queue has an event
        elif waiting >= EARLY_COMMIT:
            self._full.set()

    def empty(self) -> None:
        """Delete every event of every table, the host's and the bundles' (replay reuses one store
        for one user after another: each starts as a new device)."""
        with self._lock:
            tables = list(self._tables.values())
        for t in tables:
            t.empty()

    def count_refused(self, reason: str) -> None:
        """Count one refused event by its reason (metrics' ``events.refused``)."""
        with self._lock:
            self._refused[reason] = self._refused.get(reason, 0) + 1

    # -- background --------------------------------------------------------------------------

    def _run(self) -> None:
        """Sleep until an event is queued (or retention is due: an idle store wakes nobody, and
        never takes the interpreter lock from a reader), then group what arrives within ``commit_ms``."""
        next_prune = 0.0
        while not self._closed:
            if self._queued.wait(max(next_prune - time.monotonic(), 0.0)) and not self._closed:
                self._full.wait(self.cfg.commit_ms / 1000)
            self._queued.clear()  # before the commit takes the queues: an event queued after it wakes us again
            self._full.clear()
            self.flush()
            if time.monotonic() >= next_prune:
                self.prune()
                next_prune = time.monotonic() + self.cfg.prune_interval_ms / 1000

    def flush(self) -> None:
        """Commit every table's queued events now."""
        with self._lock:
            tables = list(self._tables.values())
        for t in tables:
            t.flush()

    def prune(self, now_ms: int | None = None) -> int:
        """Apply every table's retention now; the number of rows removed."""
        now = self.clock() if now_ms is None else now_ms
        with self._lock:
            tables = [t for t in self._tables.values() if t.spec.max_age_ms or t.spec.max_rows]
        return sum(t.prune(now) for t in tables)

    def metrics(self) -> dict[str, Any]:
        """Counts per table (stored, refused, pruned, commit failures, pending) and refusals by reason."""
        with self._lock:
            tables = dict(self._tables)
            refused = dict(self._refused)
        return {"tables": {k: {**t.counts, "pending": len(t.pending)} for k, t in tables.items()},
                "refused": refused}

    def close(self) -> None:
        """Commit what is queued and close every file."""
        if self._closed:
            return
        self._closed = True
        if hasattr(self, "_thread"):
            self._queued.set()
            self._full.set()
            self._thread.join(5)
        with self._lock:
            tables = list(self._tables.values())
        for t in tables:
            t.flush()
            t.close()


class Access:
    """What one bundle's scripts may do with the store: read the host tables its manifest lists
    and its own tables, write its own tables. Every argument is checked as hostile input."""

    def __init__(self, store: EventStore | None, bundle: str, reads: Sequence[str], own: Mapping[str, _Table],
                 prefetch: Mapping[str, Sequence[Prefetch]] = {}) -> None:  # noqa: B006 - read only
        self.store = store
        self.bundle = bundle
        self.reads = tuple(reads)
        self.own = dict(own)
        self._sql: ReadOnlySQL | None = None
        self._sql_tables: list[_Table] = []
        self.prefetches = {b: tuple(reads) for b, reads in prefetch.items()}
        for reads_of in self.prefetches.values():  # a declared read is checked as a query, at load
            for read in reads_of:
                table = self._declared_table(read)
                if table is not None:
                    self._declared_query(table, read, 0)

    def _declared_table(self, read: Prefetch) -> _Table | None:
        """The table of a declared read (``PolicyError`` if the bundle may not read it); None if
        this device does not declare that host table (a query of it is ``not_found``)."""
        try:
            return self._table(read.table)
        except NotFound:
            return None

    def _declared_query(self, table: _Table, read: Prefetch, now_ms: int) -> Query:
        fields = read.query["fields"]
        spec = {**read.query, "since_ms": now_ms - read.window_ms,
                "fields": None if fields is None else ["ts", *fields]}  # ts: the worker cuts windows by it
        try:
            return Query(table, spec, table.cfg.max_query_rows)
        except BadInput as exc:
            raise BadInput(f"bundle {self.bundle}: 'events.prefetch' of {read.table}: {exc.message}") from None

    def prefetch(self, business: str, deadline: float) -> list[list | None]:
        """Run the reads entry ``business`` declares (``events.prefetch``), for a request about to
        be sent to a worker: per read, ``[since_ms, complete, max_rows, columns]`` (``complete``:
        the window was not cut by the limit, so every narrower window is in it), or None where the
        read failed (the script's own query then goes over the channel and meets the error)."""
        out: list[list | None] = []
        now = time.time_ns() // 1_000_000
        for read in self.prefetches.get(business, ()):
            table = self._declared_table(read)
            if table is None:
                out.append(None)
                continue
            q = self._declared_query(table, read, now)
            try:
                columns = table.select(q, deadline)
            except EdgeError:
                out.append(None)
                continue
            out.append([q.since_ms, len(columns["ts"]) < q.limit, table.cfg.max_query_rows, columns])
        return out

    def _table(self, name: Any, *, write: bool = False) -> _Table:
        if type(name) is not str:
            raise BadInput(f"a table name is a str, not {type(name).__name__}")
        if name in self.own:
            return self.own[name]
        if write or name not in self.reads:
            what = "write" if write else "read"
            raise PolicyError(f"bundle {self.bundle} may not {what} table {name!r} (it reads "
                              f"{', '.join(self.reads) or 'no host table'}; it owns "
                              f"{', '.join(self.own) or 'no table'})")
        table = self.store._tables.get(name) if self.store is not None else None
        if table is None or table.owner is not None:
            raise NotFound(f"table {name!r} is not declared on this device (config 'data.tables')")
        return table

    def call(self, op: Any, args: Any, deadline: float, *, writes: bool = True) -> Any:
        """One ``edge.events`` call (``op`` and its argument list, from a script or a worker's
        frame: hostile input); ``writes=False`` refuses ``append`` (a spare worker's rehearsal)."""
        if type(args) is not list:
            raise BadInput("edge.events: the arguments must be a list")
        if op == "query" and len(args) == 2:
            return self.query(args[0], args[1], deadline)
        if op == "sql" and len(args) == 3:
            return self.sql(args[0], args[1], args[2], deadline)
        if op == "append" and len(args) == 2:
            if not writes:
                raise PolicyError("edge.events.append: a rehearsal does not write")
            return self.append(args[0], args[1])
        raise BadInput(f"edge.events has no operation {op!r} taking {len(args)} arguments")

    def query(self, table: Any, spec: Any, deadline: float) -> dict[str, np.ndarray]:
        """``edge.events.query``: columns as numpy arrays, oldest first."""
        t = self._table(table)
        if type(spec) is not dict:
            raise BadInput("query arguments must be a dict")
        return t.select(Query(t, spec, t.cfg.max_query_rows), deadline)

    def append(self, table: Any, row: Any) -> None:
        """``edge.events.append``: one event into one of the bundle's own tables."""
        t = self._table(table, write=True)
        if type(row) is not dict:
            raise BadInput(f"an event is a dict, not {type(row).__name__}")
        if "table" in row:
            raise BadInput("an appended event names no table (it goes to the table given)")
        assert self.store is not None
        self.store.write(t, row)

    def sql(self, query: Any, params: Any, limit: Any, deadline: float) -> dict[str, np.ndarray]:
        """``edge.events.sql``: a read-only, parameterised SELECT over the readable tables."""
        if self.store is None:
            raise NotFound("no event store is configured (config 'data')")
        if self._sql is None:
            readable = {name: self._table(name) for name in self.reads if self.store._tables.get(name)}
            readable.update(self.own)
            self._sql_tables = list(readable.values())
            self._sql = ReadOnlySQL({n: (t.path, ("ts", *t.clear)) for n, t in readable.items()})
        for t in self._sql_tables:  # the statement sees every event track() accepted
            t.flush()
        max_rows = self.store.cfg.max_query_rows
        limit = max_rows if limit is None else _opt_int(limit, "limit")
        if not 1 <= limit <= max_rows:
            raise BadInput(f"sql: 'limit' must be in [1, {max_rows}], got {limit}")
        names, rows = self._sql.run(query, params, limit, deadline)
        return {n: _array([r[i] for r in rows], None) for i, n in enumerate(names)}


class _Reader(sqlite3.Connection):
    """A reader connection whose progress handler ends a statement once ``deadline`` (monotonic
    seconds) has passed; set once per connection, not per query."""

    deadline = float("inf")

    def expired(self) -> bool:
        return time.monotonic() > self.deadline


def _array(values: Sequence[Any], ftype: str | None) -> np.ndarray:
    """One result column as a numpy array of the field's type (``None``: inferred from the values)."""
    if ftype is None:
        kinds = {type(v) for v in values}
        if kinds <= {int}:
            ftype = "int"
        elif kinds <= {int, float, type(None)}:
            values = [np.nan if v is None else v for v in values]
            ftype = "float"
        elif kinds <= {str}:
            ftype = "str"
        else:
            raise BadInput(f"sql: a result column mixes {', '.join(sorted(k.__name__ for k in kinds))}")
    if ftype == "str":  # as wide as its longest value
        return np.array(values, dtype=str) if len(values) else np.zeros(0, "<U1")
    return np.array(values, dtype=NP_TYPES[ftype])


def _q(name: str) -> str:
    """A quoted SQL identifier (names are checked by vm.bundle.tables; quoting is the second layer)."""
    return '"' + name.replace('"', '""') + '"'


def _size(value: Any) -> int:
    return len(value.encode()) if type(value) is str else 8


def _ring_size(configured: int, spec: TableSpec) -> int:
    return min(configured, spec.max_rows) if spec.max_rows else configured
