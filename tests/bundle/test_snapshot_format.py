"""Feature snapshot files read as hostile bytes: the signature is checked before anything is parsed
or decrypted, every header field is validated before it is used, and what comes out is read-only
data viewing one buffer (vm/bundle/snapshot.py)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from conftest import forge_snapshot

from vm.bundle import format as bundle_format
from vm.bundle import keys as keys_mod
from vm.bundle import snapshot
from vm.errors import BadInput, DecryptError, IncompatibleError, SignatureError
from vm.tools import snapshot as builder

MAX = 1 << 30


def columns() -> dict[str, np.ndarray]:
    return {"item": np.arange(100, dtype=np.int64), "score": np.linspace(0, 1, 100, dtype=np.float32),
            "emb": np.arange(400, dtype=np.float32).reshape(100, 4), "open": np.arange(100) % 2 == 0}


def built(tmp_path: Path, keys_dir: Path, **kw: Any) -> bytes:
    out = tmp_path / "s.evs"
    builder.build(kw.pop("name", "pop"), kw.pop("version", "1.0.0"), keys_dir, out, **kw)
    return out.read_bytes()


def column_header(**col: Any) -> tuple[dict[str, Any], bytes]:
    body = np.arange(16, dtype=np.float32).tobytes()
    spec = {"name": "x", "dtype": "<f4", "shape": [16], "offset": 0, "length": 64, **col}
    return {"name": "pop", "version": "1.0.0", "created": 1, "kind": "columns", "columns": [spec]}, body


def _root(arr: Any) -> Any:
    while isinstance(arr, np.ndarray):
        arr = arr.base
    return arr


@pytest.mark.parametrize("encrypt", [False, True])
def test_columns_round_trip_as_read_only_views_of_one_buffer(tmp_path: Path, keys_dir: Path, device,
                                                             encrypt: bool) -> None:
    data = built(tmp_path, keys_dir, columns=columns(), encrypt=encrypt)
    snap = snapshot.open_snapshot(data, device, max_size=MAX)
    assert (snap.name, snap.version, snap.kind, snap.encrypted) == ("pop", "1.0.0", "columns", encrypt)
    for name, want in columns().items():
        got = snap.data[name]
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
        assert not got.flags.writeable and got.base is not None
        with pytest.raises(ValueError):
            got.setflags(write=True)
    roots = {id(_root(a)) for a in snap.data.values()}
    assert len(roots) == 1 and isinstance(_root(snap.data["item"]), bytes)  # one buffer, never copied
    with pytest.raises(TypeError):
        snap.data["new"] = np.zeros(1)  # type: ignore[index]
    if encrypt:
        assert columns()["item"].tobytes() not in data


def test_a_dict_snapshot_is_frozen(tmp_path: Path, keys_dir: Path, device) -> None:
    data = built(tmp_path, keys_dir, name="stores", table={"open": [1, 2, 3], "by_city": {"paris": [4, 5]}},
                 encrypt=True)
    snap = snapshot.open_snapshot(data, device, max_size=MAX)
    assert snap.kind == "dict" and snap.data["open"] == (1, 2, 3) and snap.data["by_city"]["paris"] == (4, 5)
    with pytest.raises(TypeError):
        snap.data["open"] = []  # type: ignore[index]
    with pytest.raises(TypeError):
        snap.data["by_city"]["rome"] = ()  # type: ignore[index]


# -- the signature before anything -------------------------------------------------------------

@pytest.mark.parametrize("where", ["signature", "body", "header", "prefix"])
@pytest.mark.parametrize("encrypt", [False, True])
def test_a_modified_byte_anywhere_is_a_signature_error(tmp_path: Path, keys_dir: Path, device, where: str,
                                                       encrypt: bool) -> None:
    data = bytearray(built(tmp_path, keys_dir, columns=columns(), encrypt=encrypt))
    hlen = int.from_bytes(data[28:32], "big")
    index = {"signature": len(data) - 5, "body": 40 + hlen + 70, "header": 45, "prefix": 14}[where]
    data[index] ^= 0x01
    with pytest.raises(SignatureError):
        snapshot.open_snapshot(bytes(data), device, max_size=MAX)


def test_a_snapshot_signed_by_a_key_the_device_does_not_pin_is_refused(tmp_path: Path, other_keys_dir: Path,
                                                                       device) -> None:
    data = built(tmp_path, other_keys_dir, columns=columns())
    with pytest.raises(SignatureError, match="does not pin"):
        snapshot.open_snapshot(data, device, max_size=MAX)


def test_a_snapshot_sealed_to_another_device_is_a_decrypt_error(tmp_path: Path, keys_dir: Path,
                                                               other_keys_dir: Path, device) -> None:
    mixed = tmp_path / "mixed"  # our signing key, the other device's sealing key
    mixed.mkdir()
    shutil.copy(keys_dir / keys_mod.SIGNING_FILE, mixed)
    shutil.copy(other_keys_dir / keys_mod.SEAL_FILE, mixed)
    data = built(tmp_path, mixed, columns=columns(), encrypt=True)
    with pytest.raises(DecryptError, match="does not hold"):
        snapshot.open_snapshot(data, device, max_size=MAX)


@pytest.mark.parametrize("cut", ["empty", "prefix", "half", "one-byte-short", "trailing", "over-limit"])
def test_truncated_extended_or_oversized_files_are_bad_input(tmp_path: Path, keys_dir: Path, device,
                                                             cut: str) -> None:
    data = built(tmp_path, keys_dir, columns=columns())
    bad = {"empty": b"", "prefix": data[:20], "half": data[: len(data) // 2], "one-byte-short": data[:-1],
           "trailing": data + b"\0", "over-limit": data}[cut]
    with pytest.raises(BadInput):
        snapshot.open_snapshot(bad, device, max_size=len(data) - 1 if cut == "over-limit" else MAX)


def test_a_bundle_is_not_a_snapshot_and_unknown_flags_are_refused(tmp_path: Path, keys_dir: Path, device,
                                                                  make_bundle) -> None:
    bundle = make_bundle({"features.py": "def entry(inputs):\n    return 1\n"}).read_bytes()
    with pytest.raises(BadInput, match="not an edgevm snapshot"):
        snapshot.open_snapshot(bundle, device, max_size=MAX)
    header, body = column_header()
    with pytest.raises(IncompatibleError, match="flags"):
        snapshot.open_snapshot(forge_snapshot(keys_dir, header, body, flags=0x0002), device, max_size=MAX)


# -- hostile headers, correctly signed ---------------------------------------------------------

HOSTILE_COLUMNS: dict[str, dict[str, Any]] = {
    "huge shape": {"shape": [1 << 40, 1 << 40]},
    "huge length": {"shape": [1 << 40], "length": 4 << 40},
    "object dtype": {"dtype": "|O"},
    "structured dtype": {"dtype": [("a", "<f4")]},
    "unicode dtype": {"dtype": "<U4", "length": 256},
    "big-endian dtype": {"dtype": ">f4"},
    "negative length": {"length": -64},
    "negative offset": {"offset": -64},
    "negative dimension": {"shape": [-16]},
    "float dimension": {"shape": [16.0]},
    "bool dimension": {"shape": [True] * 16},
    "no dimension": {"shape": [], "length": 4},
    "five dimensions": {"shape": [1, 1, 1, 1, 16]},
    "offset past the body": {"offset": 64},
    "misaligned offset": {"offset": 4, "shape": [15], "length": 60},
    "length not the shape's": {"length": 60},
    "shape a string": {"shape": "16"},
    "bad column name": {"name": "../x"},
    "extra field": {"stride": 4},
}


@pytest.mark.parametrize("case", sorted(HOSTILE_COLUMNS))
@pytest.mark.parametrize("encrypt", [False, True])
def test_a_hostile_column_layout_is_bad_input(case: str, encrypt: bool, keys_dir: Path, device) -> None:
    header, body = column_header(**HOSTILE_COLUMNS[case])
    with pytest.raises(BadInput):
        snapshot.open_snapshot(forge_snapshot(keys_dir, header, body, encrypt=encrypt), device, max_size=MAX)


HOSTILE_HEADERS: dict[str, dict[str, Any]] = {
    "unknown kind": {"kind": "pickle"},
    "no columns": {"columns": []},
    "columns not a list": {"columns": {"x": 1}},
    "too many columns": {"columns": [{"name": f"c{i}", "dtype": "|u1", "shape": [0], "offset": 0, "length": 0}
                                     for i in range(snapshot.MAX_COLUMNS + 1)]},
    "a column twice": {"columns": [column_header()[0]["columns"][0]] * 2},
    "bad version": {"version": "1.0-beta"},
    "bad name": {"name": ""},
    "created negative": {"created": -1},
    "unknown field": {"hook": "x"},
    "columns and a dict": {"dict": {"offset": 0, "length": 1}},
    "dict past the body": {"kind": "dict", "columns": None, "dict": {"offset": 0, "length": 65}},
    "dict negative length": {"kind": "dict", "columns": None, "dict": {"offset": 0, "length": -1}},
    "dict not msgpack": {"kind": "dict", "columns": None, "dict": {"offset": 0, "length": 64}},
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_a_hostile_header_is_bad_input(case: str, keys_dir: Path, device) -> None:
    header, body = column_header()
    header.update(HOSTILE_HEADERS[case])
    header = {k: v for k, v in header.items() if v is not None}
    if case == "dict not msgpack":
        body = b"\xc1" * 64  # 0xc1 is never valid msgpack
    with pytest.raises(BadInput):
        snapshot.open_snapshot(forge_snapshot(keys_dir, header, body), device, max_size=MAX)


def test_a_header_that_is_not_a_map_or_not_msgpack_is_bad_input(keys_dir: Path, device) -> None:
    server = keys_mod.load_server(keys_dir)
    for head in (msgpack.packb([1, 2]), b"\xc1\xc1"):
        aad = bundle_format.prefix(server.sign_key_id, bytes(8), len(head), 0, magic=snapshot.MAGIC) + head
        with pytest.raises(BadInput):
            snapshot.open_snapshot(aad + server.signing.sign(aad).signature, device, max_size=MAX)


def test_a_bool_column_holding_other_bytes_is_bad_input(keys_dir: Path, device) -> None:
    header, _ = column_header(dtype="|b1", shape=[4], length=4)
    with pytest.raises(BadInput, match="bool"):
        snapshot.open_snapshot(forge_snapshot(keys_dir, header, b"\x00\x01\x02\x00"), device, max_size=MAX)


def test_sealed_key_fields_must_match_the_encryption_flag(keys_dir: Path, device) -> None:
    header, body = column_header()
    with pytest.raises(BadInput, match="sealed key"):  # flags say encrypted, no nonce or sealed key
        snapshot.open_snapshot(forge_snapshot(keys_dir, header, body, flags=snapshot.ENCRYPTED), device, max_size=MAX)
    with pytest.raises(BadInput, match="not encrypted"):
        snapshot.open_snapshot(forge_snapshot(keys_dir, {**header, "nonce": b"\0" * 24, "sealed_key": b"\0" * 80}, body),
                               device, max_size=MAX)


def test_a_dict_nested_too_deep_is_bad_input(keys_dir: Path, device) -> None:
    doc: Any = 1
    for _ in range(snapshot.MAX_DEPTH + 2):
        doc = {"x": doc}
    body = msgpack.packb(doc)
    header = {"name": "d", "version": "1", "created": 1, "kind": "dict", "dict": {"offset": 0, "length": len(body)}}
    with pytest.raises(BadInput, match="deeper"):
        snapshot.open_snapshot(forge_snapshot(keys_dir, header, body), device, max_size=MAX)


def test_the_builder_refuses_what_the_device_would(tmp_path: Path, keys_dir: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    cases = [dict(columns={"x": tmp_path / "obj.npy"}), dict(columns={"x": np.array(["a", "b"])}),
             dict(columns={"x": np.zeros((1, 1, 1, 1, 1))}), dict(columns={"bad name": np.zeros(2)}),
             dict(columns={}), dict(columns={"x": np.zeros(2)}, table={"a": 1}), dict(table=[1, 2])]
    for kw in cases:
        with pytest.raises(BadInput):
            builder.build("pop", "1.0.0", keys_dir, tmp_path / "x.evs", **kw)
    with pytest.raises(BadInput):
        builder.build("pop", "not-a-version", keys_dir, tmp_path / "x.evs", columns={"x": np.zeros(2)})
    assert not (tmp_path / "x.evs").exists()
