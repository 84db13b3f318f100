"""The wire format at every boundary: msgpack, decoded defensively into typed errors.

Inputs and results cross the C API, the Python API and the channel to worker processes as
msgpack (DESIGN.md, decision 5); bundle headers and payloads are msgpack too. Every decode here
refuses what is not valid msgpack with a typed error, never a library exception; every encode
turns numpy arrays and scalars into lists and numbers, and sets into lists. An encode with a
``limit`` refuses a value whose encoding would exceed it before encoding it (a list of a thousand
references to one 1 MiB string is small in memory and a GiB on the wire).
"""
from __future__ import annotations

from itertools import chain
from typing import Any

import msgpack

from vm.errors import BadInput, EdgeError

_DECODE_ERRORS = (ValueError, msgpack.UnpackException, TypeError)
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError)


def to_plain(value: Any) -> Any:
    """msgpack's ``default`` hook: numpy arrays and scalars (only numpy's own types: a script class
    with a ``tolist`` method would run script code here) and sets."""
    tolist = getattr(type(value), "tolist", None)
    if tolist is not None and type(value).__module__ == "numpy":
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot serialise object of type {type(value).__name__}")


_SCALARS = frozenset((int, float, bool, type(None)))
_STRINGS = frozenset((str, bytes, bytearray))


def size_at_least(value: Any, limit: int) -> int:
    """A lower bound of ``value``'s msgpack size, counted until it passes ``limit`` (it then returns
    at once): every item takes at least a byte, strings and bytes at least their length. Walks
    depth first, holding one iterator per level, so the walk itself stays small."""
    total = 0
    stack = [iter((value,))]
    while stack:
        pushed = False
        for v in stack[-1]:
            t = type(v)
            if t in _SCALARS:
                continue
            if t is str or t is bytes or t is bytearray:
                total += len(v)
            elif t is list or t is tuple or t is set or t is frozenset:
                kinds = set(map(type, v))  # the common flat sequences are counted in C
                if kinds <= _SCALARS:
                    total += len(v)
                elif kinds <= _STRINGS:
                    total += len(v) + sum(map(len, v))
                else:
                    total += len(v)
                    stack.append(iter(v))
                    pushed = True
            elif t is dict:
                total += 2 * len(v)
                stack.append(chain.from_iterable(v.items()))
                pushed = True
            elif t.__module__ == "numpy" and hasattr(v, "size"):
                total += int(v.size)
            if total > limit:
                return total
            if pushed:  # the new level first (depth first)
                break
        else:
            stack.pop()
    return total


def encode(value: Any, *, what: str = "the value", error: type[EdgeError] = BadInput,
           limit: int | None = None) -> bytes:
    """``value`` as msgpack, or ``error`` saying why it cannot be; with a ``limit``, a value whose
    encoding would certainly be longer is refused before it is encoded (the caller still checks
    the exact length)."""
    if limit is not None and size_at_least(value, limit) > limit:
        raise error(f"{what}: more than the limit of {limit} bytes once encoded (refused before encoding)")
    try:
        return msgpack.packb(value, use_bin_type=True, default=to_plain)
    except _ENCODE_ERRORS as exc:
        raise error(f"{what} cannot be serialised: {exc}") from None


def decode(data: bytes, *, what: str = "the input", error: type[EdgeError] = BadInput) -> Any:
    """The value ``data`` encodes, or ``error`` (the message names ``what``, never the bytes)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except _DECODE_ERRORS as exc:
        raise error(f"{what} is not valid msgpack ({type(exc).__name__})") from None


COLUMN_DTYPES = ("<i8", "<f8", "|b1")  # and "<U<n>": the event store's column types


def pack_columns(columns: dict[str, Any]) -> dict[str, list]:
    """Numpy result columns of ``edge.events`` for the worker's channel: ``{name: [dtype, raw bytes]}``."""
    return {name: [col.dtype.str, col.tobytes()] for name, col in columns.items()}


def unpack_columns(doc: Any) -> dict[str, Any]:
    """``pack_columns``'s output as writable numpy arrays; ``BadInput`` for anything else."""
    import numpy as np

    if type(doc) is not dict:
        raise BadInput("event columns must be a map")
    out = {}
    for name, item in doc.items():
        ok = type(name) is str and type(item) is list and len(item) == 2 and type(item[1]) is bytes
        dtype = item[0] if ok else None
        if not ok or not (dtype in COLUMN_DTYPES or type(dtype) is str and dtype[:2] == "<U" and dtype[2:].isdigit()
                                                  and 0 < int(dtype[2:]) < 1 << 20):
            raise BadInput("event columns: a column is not [dtype, bytes] of a known dtype")
        dt = np.dtype(dtype)
        if len(item[1]) % dt.itemsize:
            raise BadInput("event columns: a column's length is not a whole number of items")
        out[name] = np.frombuffer(bytearray(item[1]), dtype=dt)
    return out
