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
