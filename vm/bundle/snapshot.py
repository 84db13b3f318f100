"""Feature snapshots: signed (and, where marked, encrypted) tables from the server that scripts read
through ``edge.features`` (docs/snapshots.md).

A snapshot file uses the bundle container's layout (``vm.bundle.format``) under its own magic:

    offset  size  field
    0       8     magic  89 45 56 53 0D 0A 1A 0A  ("\\x89EVS\\r\\n\\x1a\\n")
    8       2     format version (1)
    10      2     flags: bit 0 set = the body is encrypted
    12      8     signing key id
    20      8     sealing key id (zeros when not encrypted)
    28      4     header length H
    32      8     body length C
    40      H     header: a msgpack map, parsed only after the signature verified
    40+H    C     body: the plain data, or XChaCha20-Poly1305 of it (associated data = bytes [0, 40+H))
    40+H+C  64    Ed25519 signature over bytes [0, 40+H+C)

The header names the snapshot, its version, its kind and the layout of the plain body: for
``columns``, each column's name, dtype (from ``DTYPES`` only), shape, offset and length; for
``dict``, the offset and length of one msgpack document. Nothing is unpickled and every field is
checked before it is used, so a publisher's bug (or a holder of the signing key) cannot make a
device read outside the body or allocate what the header announces. Columns are read-only numpy
views of the one immutable ``bytes`` object holding the body; a dict is frozen (mappings become
``MappingProxyType``, lists tuples); neither is ever copied per call.
"""
from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vm import wire
from vm.bundle import format as bundle_format
from vm.bundle.keys import DeviceKeys
from vm.bundle.loader import check_signature, open_sealed
from vm.bundle.manifest import NAME_RE
from vm.bundle.versions import parse_version
from vm.errors import BadInput

MAGIC = b"\x89EVS\r\n\x1a\n"
ENCRYPTED = 0x0001
KINDS = ("columns", "dict")
SUFFIX = ".evs"
ALIGN = 64  # column offsets in the body are multiples of this
# Plain numeric data only: no object, structured, string or datetime dtype reaches a script.
DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"})
MAX_COLUMNS = 1024
MAX_NDIM = 4
MAX_DEPTH = 32  # nesting of a dict snapshot
HEADER_KEYS = frozenset({"name", "version", "created", "kind", "columns", "dict", "nonce", "sealed_key"})


@dataclass(frozen=True)
class Snapshot:
    """A verified, decrypted, parsed snapshot. ``data`` is what ``edge.features.get`` returns: a
    read-only mapping of column name to read-only array, or the frozen dict."""

    name: str
    version: str
    kind: str
    created: int
    encrypted: bool
    data: Mapping[str, Any] = field(repr=False)
    layout: dict[str, Any] = field(repr=False)  # the header's name, version, kind and layout fields
    body: bytes = field(repr=False)  # the plain body the arrays view

    @property
    def key(self) -> tuple[int, ...]:
        return parse_version(self.version)

    def info(self) -> dict[str, Any]:
        """What the runtime reports about it (plain data)."""
        out: dict[str, Any] = {"name": self.name, "version": self.version, "kind": self.kind,
                               "created": self.created, "encrypted": self.encrypted, "bytes": len(self.body)}
        if self.kind == "columns":
            out["columns"] = {c["name"]: {"dtype": c["dtype"], "shape": list(c["shape"])}
                              for c in self.layout["columns"]}
        return out


def _int(doc: Mapping[str, Any], key: str, what: str, lo: int = 0, hi: int = 1 << 62) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadInput(f"{what}: {key!r} must be a whole number in [{lo}, {hi}], got {value!r}")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise BadInput(f"{what} must be 1-128 characters of [A-Za-z0-9._-], got {value!r}")
    return value


def check_layout(doc: Any, body_len: int) -> dict[str, Any]:
    """Validate a header's name, version, kind and layout against a body of ``body_len`` bytes;
    the layout as plain data (what a worker process receives with the body)."""
    if not isinstance(doc, dict):
        raise BadInput("snapshot header must be a map")
    unknown = sorted(str(k) for k in doc if k not in HEADER_KEYS)
    if unknown:
        raise BadInput(f"snapshot header has unknown field(s) {', '.join(unknown)}")
    name = _name(doc.get("name"), "snapshot name")
    version = doc.get("version")
    parse_version(version, f"snapshot {name}: version")
    where = f"snapshot {name} {version}"
    created = _int(doc, "created", where)
    kind = doc.get("kind")
    if kind not in KINDS:
        raise BadInput(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    out: dict[str, Any] = {"name": name, "version": version, "created": created, "kind": kind}
    if kind == "dict":
        part = doc.get("dict")
        if not isinstance(part, dict) or doc.get("columns") is not None:
            raise BadInput(f"{where}: a dict snapshot has a 'dict' part (offset, length) and no columns")
        offset, length = _int(part, "offset", where), _int(part, "length", where)
        if offset + length > body_len:
            raise BadInput(f"{where}: its dict ends at byte {offset + length}, past the body's {body_len}")
        out["dict"] = {"offset": offset, "length": length}
        return out
    columns = doc.get("columns")
    if not isinstance(columns, list) or not 0 < len(columns) <= MAX_COLUMNS or doc.get("dict") is not None:
        raise BadInput(f"{where}: a columns snapshot has a list of 1 to {MAX_COLUMNS} columns and no dict")
    seen: set[str] = set()
    checked = []
    for col in columns:
        if not isinstance(col, dict) or set(col) != {"name", "dtype", "shape", "offset", "length"}:
            raise BadInput(f"{where}: each column is a map of name, dtype, shape, offset and length")
        cname = _name(col["name"], f"{where}: column name")
        if cname in seen:
            raise BadInput(f"{where}: column {cname!r} appears twice")
        seen.add(cname)
        dtype = col["dtype"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise BadInput(f"{where}: column {cname!r} has dtype {dtype!r}; allowed: {', '.join(sorted(DTYPES))}")
        shape = col["shape"]
        if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_NDIM \
                or not all(type(d) is int and 0 <= d <= 1 << 40 for d in shape):
            raise BadInput(f"{where}: column {cname!r} shape must be 1 to {MAX_NDIM} whole numbers in "
                           f"[0, 2**40], got {shape!r}")
        offset, length = _int(col, "offset", where), _int(col, "length", where)
        itemsize = int(dtype[2:])
        count = 1
        for d in shape:
            count *= d
        if count * itemsize != length:
            raise BadInput(f"{where}: column {cname!r} of shape {shape} and dtype {dtype} takes "
                           f"{count * itemsize} bytes, its length says {length}")
        if offset % ALIGN or offset + length > body_len:
            raise BadInput(f"{where}: column {cname!r} at [{offset}, {offset + length}) is not aligned to {ALIGN} "
                           f"or ends past the body's {body_len} bytes")
        checked.append({"name": cname, "dtype": dtype, "shape": list(shape), "offset": offset, "length": length})
    out["columns"] = checked
    return out


def freeze(value: Any, depth: int = 0) -> Any:
    """A dict snapshot's value made immutable: maps to ``MappingProxyType``, lists to tuples."""
    if depth > MAX_DEPTH:
        raise BadInput(f"dict snapshot nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return types.MappingProxyType({k: freeze(v, depth + 1) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v, depth + 1) for v in value)
    return value


def parse(layout: dict[str, Any], body: bytes) -> Mapping[str, Any]:
    """The data a checked ``layout`` describes in ``body``: read-only views (columns) or the frozen
    dict. Views of ``body`` itself: nothing is copied."""
    if layout["kind"] == "dict":
        part = layout["dict"]
        doc = wire.decode(memoryview(body)[part["offset"]:part["offset"] + part["length"]],
                          what=f"snapshot {layout['name']}'s dict")
        if not isinstance(doc, dict):
            raise BadInput(f"snapshot {layout['name']}'s dict part is not a map")
        return freeze(doc)
    import numpy as np  # only a runtime that reads column snapshots needs it

    columns = {}
    for col in layout["columns"]:
        count = col["length"] // int(col["dtype"][2:])
        arr = np.frombuffer(body, dtype=np.dtype(col["dtype"]), count=count, offset=col["offset"])
        if col["dtype"] == "|b1" and count and arr.view(np.uint8).max() > 1:
            raise BadInput(f"snapshot {layout['name']}: bool column {col['name']!r} holds bytes other than 0 and 1")
        arr = arr.reshape(col["shape"])
        arr.flags.writeable = False
        columns[col["name"]] = arr
    return types.MappingProxyType(columns)


def open_snapshot(data: bytes, device: DeviceKeys, *, max_size: int) -> Snapshot:
    """Untrusted bytes in, a ``Snapshot`` out, or a typed error: split, verify the signature with a
    pinned key, then parse the header, decrypt (if encrypted), check the layout, view the data."""
    raw = bundle_format.split(data, max_size, magic=MAGIC, what="snapshot", known_flags=ENCRYPTED)
    check_signature(raw, device, "snapshot")
    doc = wire.decode(raw.header, what="snapshot header")
    if not isinstance(doc, dict):
        raise BadInput("snapshot header must be a map")
    encrypted = bool(raw.flags & ENCRYPTED)
    if encrypted:
        nonce, sealed = doc.get("nonce"), doc.get("sealed_key")
        if not isinstance(nonce, bytes) or len(nonce) != bundle_format.NONCE_LEN or not isinstance(sealed, bytes) \
                or len(sealed) != bundle_format.SEALED_KEY_LEN:
            raise BadInput("encrypted snapshot header has a malformed nonce or sealed key")
        body = open_sealed(raw, nonce, sealed, device, "snapshot")
    else:
        if "nonce" in doc or "sealed_key" in doc:
            raise BadInput("snapshot header carries a sealed key but its flags say it is not encrypted")
        body = raw.ciphertext
    layout = check_layout({k: v for k, v in doc.items() if k not in ("nonce", "sealed_key")}, len(body))
    return restore(layout, body, encrypted=encrypted)


def restore(layout: dict[str, Any], body: bytes, *, encrypted: bool) -> Snapshot:
    """A snapshot from its checked layout and plain body: what a worker process builds from what its
    supervisor's ``open_snapshot`` verified (it checks the layout again: it costs microseconds)."""
    layout = check_layout(layout, len(body))
    return Snapshot(name=layout["name"], version=layout["version"], kind=layout["kind"], created=layout["created"],
                    encrypted=encrypted, data=parse(layout, body), layout=layout, body=body)


def export(snap: Snapshot) -> list[Any]:
    """What a worker process needs of a snapshot, as plain data for its channel."""
    return [snap.layout, snap.body, snap.encrypted]
