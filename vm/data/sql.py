"""The read-only SQL form of ``edge.events``: one parameterised SELECT over a bundle's readable tables.

Each connection is an in-memory database with the readable tables' files attached read-only and
one temporary view per table, named as the script knows it, showing only the clear columns (``ts``
and what the table keeps in clear; a sealed payload is never visible). An authorizer allows reads of
those columns, SELECT and a list of plain functions, and denies everything else (writes, PRAGMA,
ATTACH, the schema tables); value lengths are capped; a progress handler stops the statement at the
call's deadline (``Timeout``); more rows than the limit is ``resource``.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vm.errors import BadInput, PolicyError, ResourceExhausted, Timeout

FUNCTIONS = frozenset({
    "abs", "avg", "count", "max", "min", "sum", "total", "round", "length", "lower", "upper", "substr",
    "substring", "coalesce", "ifnull", "iif", "nullif", "instr", "like", "glob", "typeof", "trim", "ltrim",
    "rtrim", "replace", "group_concat", "date", "time", "datetime", "julianday", "strftime", "unixepoch",
    "sign", "floor", "ceil", "ceiling", "log", "ln", "log10", "log2", "exp", "pow", "power", "sqrt", "mod",
    "row_number", "rank", "dense_rank", "lag", "lead", "first_value", "last_value", "ntile",
})
MAX_SQL = 16 << 10
MAX_VALUE = 1 << 20          # longest string or blob a statement may build
PROGRESS_OPS = 1000
MAX_PARAMS = 1000


class ReadOnlySQL:
    """Connections (one per thread at a time) to a fixed set of tables: name -> (file, clear columns)."""

    def __init__(self, tables: Mapping[str, tuple[Path, Sequence[str]]]) -> None:
        self.tables = dict(tables)
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", uri=True, check_same_thread=False, isolation_level=None)
        allowed: dict[str, frozenset[str]] = {}
        for i, (name, (path, cols)) in enumerate(sorted(self.tables.items())):
            schema = f"t{i}"
            conn.execute(f"ATTACH DATABASE ? AS {schema}", (f"file:{path}?mode=ro",))
            shown = ", ".join(f'"{c}"' for c in cols)
            conn.execute(f'CREATE TEMP VIEW "{name}" AS SELECT {shown} FROM {schema}.events')
            allowed[schema] = frozenset(cols)
        conn.execute("PRAGMA query_only=1")
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, len(allowed))

        def authorize(action: int, a: str | None, b: str | None, db: str | None, _inner: str | None) -> int:
            if action == sqlite3.SQLITE_SELECT:
                return sqlite3.SQLITE_OK
            if action == sqlite3.SQLITE_READ:
                if (db is None  # a common table expression's rows
                        or db == "temp" and a in self.tables
                        or db in allowed and a == "events" and (b in allowed[db] or b == "")):  # "": rows only
                    return sqlite3.SQLITE_OK
                return sqlite3.SQLITE_DENY
            if action == sqlite3.SQLITE_FUNCTION and isinstance(b, str) and b.lower() in FUNCTIONS:
                return sqlite3.SQLITE_OK
            if action == getattr(sqlite3, "SQLITE_RECURSIVE", 33):
                return sqlite3.SQLITE_OK
            return sqlite3.SQLITE_DENY

        conn.set_authorizer(authorize)
        return conn

    def run(self, query: Any, params: Any, limit: int, deadline: float) -> tuple[list[str], list[tuple]]:
        """Column names and rows of one SELECT, stopped at ``deadline`` (``time.monotonic()``)."""
        if type(query) is not str or len(query) > MAX_SQL:
            raise BadInput(f"sql: the statement must be a str of at most {MAX_SQL} characters")
        params = [] if params is None else params
        if type(params) not in (list, tuple) or len(params) > MAX_PARAMS or not all(
                type(p) in (int, float, str, bool) or p is None for p in params):
            raise BadInput("sql: 'params' must be a list of int, float, str, bool or None values")
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_OPS)
            cur = conn.execute(query, list(params))
            rows = cur.fetchmany(limit + 1)
            names = [d[0] for d in cur.description or ()]
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if time.monotonic() > deadline or text == "interrupted":
                raise Timeout("sql: the statement did not finish before the call's deadline") from None
            if "not authorized" in text or "prohibited" in text or "readonly" in text:
                raise PolicyError(f"sql: only SELECT over the bundle's readable tables is allowed ({text})") from None
            raise BadInput(f"sql: {text}") from None
        except sqlite3.Warning as exc:  # more than one statement
            raise BadInput(f"sql: {exc}") from None
        finally:
            conn.set_progress_handler(None, 0)
            with self._lock:
                self._idle.append(conn)
        if len(rows) > limit:
            raise ResourceExhausted(f"sql: the statement returns more than {limit} rows (its limit)")
        return names, rows
