"""The wire format at every boundary: msgpack, decoded defensively into typed errors.

Inputs and results cross the C API, the Python API and the channel to worker processes as
msgpack (DESIGN.md, decision 5); bundle headers and payloads are msgpack too. Every decode here
refuses what is not valid msgpack with a typed error, never a library exception; every encode
turns numpy arrays and scalars into lists and numbers, and sets into lists.
"""
from __future__ import annotations

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


def encode(value: Any, *, what: str = "the value", error: type[EdgeError] = BadInput) -> bytes:
    """``value`` as msgpack, or ``error`` saying why it cannot be."""
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
