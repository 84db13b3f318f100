"""``edgevm snapshot build``: a feature snapshot file from numpy columns or a dict, signed with the
bundle signing key and, if asked, encrypted to the device's key (layout in ``vm.bundle.snapshot``).

Columns come from ``.npy`` files (read with ``allow_pickle=False``) or arrays; a dict from a JSON
file or a mapping. Every snapshot this writes is opened again with ``vm.bundle.snapshot``'s own
checks before it is returned, so the server refuses what a device would refuse.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nacl.bindings
import nacl.utils
import numpy as np
from nacl.public import SealedBox

from vm.bundle import files, keys
from vm.bundle import format as bundle_format
from vm.bundle import snapshot as snap_format
from vm.errors import BadInput, NotFound

MAX_SNAPSHOT_BYTES = 1 << 32


@dataclass(frozen=True)
class Built:
    path: Path
    name: str
    version: str
    kind: str
    size: int
    encrypted: bool


def _column(name: str, value: Any) -> np.ndarray:
    if isinstance(value, (str, Path)):
        try:
            value = np.load(value, allow_pickle=False)
        except FileNotFoundError:
            raise NotFound(f"column {name}: {value} not found") from None
        except ValueError as exc:
            raise BadInput(f"column {name}: {value} is not a plain .npy array ({exc})") from None
    arr = np.asarray(value)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dtype.str not in snap_format.DTYPES:
        raise BadInput(f"column {name}: dtype {arr.dtype} is not one a snapshot holds "
                       f"({', '.join(sorted(snap_format.DTYPES))})")
    if not 1 <= arr.ndim <= snap_format.MAX_NDIM:
        raise BadInput(f"column {name}: {arr.ndim} dimensions (1 to {snap_format.MAX_NDIM})")
    return np.ascontiguousarray(arr, dtype=dtype)


def body_and_layout(*, columns: Mapping[str, Any] | None, table: Any) -> tuple[bytes, dict[str, Any]]:
    """The plain body and its layout fields for ``columns`` (name -> array or .npy path) or a
    ``table`` (a mapping, or a JSON file's path)."""
    if (columns is None) == (table is None):
        raise BadInput("a snapshot holds either columns or a dict")
    if table is not None:
        if isinstance(table, (str, Path)):
            try:
                table = json.loads(Path(table).read_text())
            except FileNotFoundError:
                raise NotFound(f"dict snapshot source {table} not found") from None
            except ValueError as exc:
                raise BadInput(f"dict snapshot source {table} is not JSON ({exc})") from None
        if not isinstance(table, Mapping):
            raise BadInput("a dict snapshot's source must be a mapping (a JSON object)")
        data = msgpack.packb(dict(table), use_bin_type=True)
        return data, {"kind": "dict", "dict": {"offset": 0, "length": len(data)}}
    assert columns is not None
    if not columns:
        raise BadInput("a columns snapshot needs at least one column")
    body = bytearray()
    layout = []
    for name, value in columns.items():
        arr = _column(name, value)
        body += b"\0" * (-len(body) % snap_format.ALIGN)
        layout.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": len(body),
                       "length": arr.nbytes})
        body += arr.tobytes()
    return bytes(body), {"kind": "columns", "columns": layout}


def build(name: str, version: str, keys_dir: str | Path, out: str | Path, *,
          columns: Mapping[str, Any] | None = None, table: Any = None, encrypt: bool = False,
          created: int | None = None) -> Built:
    """Write the snapshot ``name`` ``version`` to ``out`` (atomically), signed with the signing key
    in ``keys_dir`` and, with ``encrypt``, sealed to its device key."""
    server = keys.load_server(keys_dir)
    body, layout = body_and_layout(columns=columns, table=table)
    header: dict[str, Any] = {"name": name, "version": version,
                              "created": int(time.time()) if created is None else created, **layout}
    snap_format.check_layout(header, len(body))  # names, version, layout: the device's own rules
    flags, seal_id = 0, bytes(keys.KEY_ID_LEN)
    if encrypt:
        content_key = nacl.utils.random(32)
        header["nonce"] = nacl.utils.random(bundle_format.NONCE_LEN)
        header["sealed_key"] = SealedBox(server.seal_to).encrypt(content_key)
        flags, seal_id = snap_format.ENCRYPTED, server.seal_key_id
    head = msgpack.packb(header, use_bin_type=True)
    clen = len(body) + (16 if encrypt else 0)
    aad = bundle_format.prefix(server.sign_key_id, seal_id, len(head), clen, magic=snap_format.MAGIC,
                               flags=flags) + head
    if encrypt:
        body = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, aad, header["nonce"], content_key)
    signed = aad + body
    data = signed + server.signing.sign(signed).signature
    bundle_format.split(data, MAX_SNAPSHOT_BYTES, magic=snap_format.MAGIC, what="snapshot",
                        known_flags=snap_format.ENCRYPTED)
    files.write_atomic(out, data)
    return Built(path=Path(out), name=name, version=version, kind=layout["kind"], size=len(data), encrypted=encrypt)


def read_header(data: bytes) -> dict[str, Any]:
    """A snapshot file's name, version and kind, without keys (what ``edgevm publish`` needs; the
    device verifies the signature before it reads them)."""
    raw = bundle_format.split(data, MAX_SNAPSHOT_BYTES, magic=snap_format.MAGIC, what="snapshot",
                              known_flags=snap_format.ENCRYPTED)
    try:
        doc = msgpack.unpackb(raw.header, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise BadInput(f"snapshot header is not msgpack ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise BadInput("snapshot header must be a map")
    return {"name": doc.get("name"), "version": doc.get("version"), "kind": doc.get("kind"),
            "encrypted": bool(raw.flags & snap_format.ENCRYPTED), "size": len(data)}
