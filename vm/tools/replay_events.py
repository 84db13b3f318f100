"""Requests rebuilt from event tables, for ``edgevm replay --events``.

A device answers ``edge.events.query`` from its own store, which holds its user's events. To replay
such requests on a server, the logged requests (one row each: the key, the user, the request time,
the other inputs) and the logged events of each table (one row each: the user, ``ts``, the table's
fields: what devices export, or the server's event log) are grouped here by user; each worker then
runs a user's requests in time order on one ``Runtime`` whose store holds exactly that user's
events with ``ts`` up to the request time (``Runtime.replay_events``: the device's own store,
ring and retention answer the queries; nothing here re-implements them).

The grouping happens in the driver, in memory: the work units are chunks of whole users, about
``batch_rows`` requests each, packed as msgpack (plain values only, as they cross to workers).
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack

from vm.errors import BadInput


def read_rows(fmt: str, files: list[Path]) -> Iterator[dict[str, Any] | BadInput]:
    """Every row of Parquet or JSON Lines ``files`` as a dict, in order; a JSON line that is not an
    object is its ``BadInput``."""
    from vm.tools.replay import TEXT_COLUMN, read_batches

    for batch in read_batches(fmt, files, 4096):
        if fmt == "parquet":
            yield from batch.to_pylist()
            continue
        for line in batch.column(TEXT_COLUMN).to_pylist():
            try:
                row = json.loads(line)
            except ValueError as exc:
                yield BadInput(f"request is not valid JSON: {exc}")
                continue
            yield row if isinstance(row, dict) else BadInput(f"a row must be a JSON object, got {type(row).__name__}")


def _events(tables: Mapping[str, tuple[str, list[Path]]], user_column: str) -> dict[Any, dict[str, list[dict]]]:
    """Each user's events per table, ordered by ``ts`` (rows with the same ``ts`` in file order, as
    a store returns events in arrival order)."""
    by_user: dict[Any, dict[str, list[dict]]] = {}
    for table, (fmt, files) in tables.items():
        for n, row in enumerate(read_rows(fmt, files)):
            if isinstance(row, BadInput):
                raise BadInput(f"events of table {table}, row {n}: {row.message}")
            if user_column not in row:
                raise BadInput(f"events of table {table}, row {n}: no user column {user_column!r} "
                               f"(columns: {', '.join(map(str, row))})")
            user = row.pop(user_column)
            if type(row.get("ts")) is not int:
                raise BadInput(f"events of table {table}, row {n}: 'ts' must be an int (ms), got {row.get('ts')!r}")
            by_user.setdefault(user, {}).setdefault(table, []).append({"table": table, **row})
    for tables_of_user in by_user.values():
        for rows in tables_of_user.values():
            rows.sort(key=lambda e: e["ts"])
    return by_user


def units(fmt: str, files: list[Path], tables: Mapping[str, tuple[str, list[Path]]], *, key_column: str,
          user_column: str, time_column: str, batch_rows: int) -> list[bytes]:
    """The work: chunks of whole users (about ``batch_rows`` requests each), each packed as
    ``[[user, requests, events], ...]``; a request is ``[key, now, payload, error_code, error]``
    (``payload``: the inputs as msgpack, without the key and user columns; a request that cannot run
    carries its error instead), in time order; ``events`` maps each table to the user's events."""
    requests: dict[Any, list[list[Any]]] = {}
    for row in read_rows(fmt, files):
        if isinstance(row, BadInput):
            requests.setdefault(None, []).append([None, 0, None, row.code, row.message])
            continue
        key = row.pop(key_column, None)
        if fmt == "jsonl" and key is not None and not isinstance(key, str):
            key = json.dumps(key)  # as the request mode keys JSON Lines: as text
        user = row.pop(user_column, None)
        now = row.get(time_column)
        error = (f"request has no key {key_column!r}" if key is None else
                 f"request has no user {user_column!r}" if user is None else
                 f"request time {time_column!r} must be an int (ms), got {now!r}"
                 if type(now) is not int or now < 0 else None)
        if error is not None:
            requests.setdefault(None if user is None else user, []).append([key, 0, None, BadInput.code, error])
            continue
        requests.setdefault(user, []).append([key, now, msgpack.packb(row, use_bin_type=True), None, None])
    events = _events(tables, user_column)
    chunks: list[bytes] = []
    chunk: list[list[Any]] = []
    size = 0
    for user, rows in requests.items():
        rows.sort(key=lambda r: r[1])
        chunk.append([user, rows, {} if user is None else events.get(user, {})])
        size += len(rows)
        if size >= batch_rows:
            chunks.append(msgpack.packb(chunk, use_bin_type=True))
            chunk, size = [], 0
    if chunk:
        chunks.append(msgpack.packb(chunk, use_bin_type=True))
    return chunks
