"""The result columns of ``edgevm replay``'s output: each result split into typed Parquet columns.

Beside ``result`` (the msgpack bytes, what a device returns), a dict result (string keys) gives one
column per key, ``result_<key>``, and any other result one column, ``result_value``. A column's
type follows from its values alone, never from how rows fell into batches or files: ``bool``,
``int64``, ``double``, ``string``, ``binary``, or a list of one of them (ints and floats together
are ``double``; ``None`` and empty lists fit any type). A column whose values do not fit one type
(a string in some rows, a number in others; nested dicts) holds each value's msgpack bytes, and
its field says so (metadata ``edgevm: msgpack``). Batches are typed as they are built; the files
of one job are brought to one schema at the end (``unify``), reading only their footers when they
already agree. Imported only once pyarrow is known to be there (``vm.tools.replay``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vm import wire

PREFIX = "result_"
VALUE_COLUMN = PREFIX + "value"
MSGPACK_META = {b"edgevm": b"msgpack"}
INT64 = (-(1 << 63), (1 << 63) - 1)


class _Conflict:
    """The type of a column whose values fit no one Arrow type: stored as msgpack."""


CONFLICT = _Conflict()


def _merge(a: Any, b: Any) -> Any:
    """The one type two values' types fit, or ``CONFLICT``."""
    if a is CONFLICT or b is CONFLICT:
        return CONFLICT
    if a == pa.null():
        return b
    if b == pa.null():
        return a
    if a == b:
        return a
    if {a, b} == {pa.int64(), pa.float64()}:
        return pa.float64()
    if pa.types.is_list(a) and pa.types.is_list(b):
        inner = _merge(a.value_type, b.value_type)
        return CONFLICT if inner is CONFLICT else pa.list_(inner)
    return CONFLICT


def _type_of(value: Any, nested: bool = False) -> Any:
    """The Arrow type of one plain (decoded msgpack) value; lists only of scalars."""
    t = type(value)
    if value is None:
        return pa.null()
    if t is bool:
        return pa.bool_()
    if t is int:
        return pa.int64() if INT64[0] <= value <= INT64[1] else CONFLICT
    if t is float:
        return pa.float64()
    if t is str:
        return pa.string()
    if t is bytes:
        return pa.binary()
    if t is list and not nested:
        inner = pa.null()
        for item in value:
            inner = _merge(inner, _type_of(item, nested=True))
            if inner is CONFLICT:
                return CONFLICT
        return pa.list_(inner)
    return CONFLICT


def split(result: Any) -> dict[str, Any]:
    """One decoded result as ``{column: value}``."""
    if type(result) is dict and all(type(k) is str for k in result):
        return {PREFIX + k: v for k, v in result.items()}
    return {VALUE_COLUMN: result}


def _array(values: Sequence[Any], typ: Any) -> Any:
    if typ is CONFLICT:
        return pa.array([None if v is None else wire.encode(v, what="a result column's value") for v in values],
                        pa.binary())
    return pa.array(values, typ)


def _field(name: str, typ: Any) -> Any:
    return pa.field(name, pa.binary(), metadata=MSGPACK_META) if typ is CONFLICT else pa.field(name, typ)


def columns(results: Sequence[bytes | None]) -> tuple[list[Any], list[Any]]:
    """The result columns of a batch (fields and arrays, by column name) from its msgpack results."""
    rows = [None if r is None else split(wire.decode(r, what="a result")) for r in results]
    types: dict[str, Any] = {}
    for row in rows:
        for name, value in (row or {}).items():
            types[name] = _merge(types.get(name, pa.null()), _type_of(value))
    names = sorted(types)
    return ([_field(n, types[n]) for n in names],
            [_array([None if row is None else row.get(n) for row in rows], types[n]) for n in names])


def _type_of_field(field: Any) -> Any:
    return CONFLICT if field.metadata == MSGPACK_META else field.type


def unify(files: Sequence[Path], base: int) -> None:
    """Bring the Parquet ``files`` of one job to one schema: the first ``base`` columns are the same
    in all; the result columns are the union of theirs, each of the type all its values fit. A file
    that already has that schema is not read; another is rewritten in place (atomically)."""
    schemas = {f: pq.read_schema(f) for f in files}
    types: dict[str, Any] = {}
    for schema in schemas.values():
        for field in list(schema)[base:]:
            types[field.name] = _merge(types.get(field.name, pa.null()), _type_of_field(field))
    first = next(iter(schemas.values()), None)
    if first is None:
        return
    target = pa.schema([*list(first)[:base], *(_field(n, types[n]) for n in sorted(types))])
    for path, schema in schemas.items():
        if schema.equals(target, check_metadata=True):
            continue
        table = pq.read_table(path)
        arrays = [table.column(i) for i in range(base)]
        rebuilt: list[Any] | None = None
        for field in list(target)[base:]:
            have = schema.field(field.name) if field.name in schema.names else None
            if field.metadata == MSGPACK_META and (have is None or have.metadata != MSGPACK_META):
                if rebuilt is None:
                    rebuilt = [None if r is None else split(wire.decode(r, what="a result"))
                               for r in table.column("result").to_pylist()]
                arrays.append(_array([None if row is None else row.get(field.name) for row in rebuilt], CONFLICT))
            elif have is None:
                arrays.append(pa.nulls(table.num_rows, field.type))
            else:
                arrays.append(table.column(field.name).cast(field.type))
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(pa.Table.from_arrays(arrays, schema=target), tmp)
        tmp.replace(path)
