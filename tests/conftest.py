"""Shared fixtures: one key set per test session, and a helper that packs a bundle from
inline sources."""
from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import nacl.bindings
import nacl.utils
import pytest
from nacl.public import SealedBox

from vm.bundle import format as bundle_format
from vm.bundle import keys as keys_mod
from vm.tools.packer import pack

# The pack target the tests use: the running interpreter's own version (the suite runs on 3.11-3.14).
TARGET = f"{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    keys_mod.generate(d)
    return d


@pytest.fixture(scope="session")
def device(keys_dir: Path) -> keys_mod.DeviceKeys:
    """The device keyring for ``keys_dir``."""
    return keys_mod.load_device(keys_dir)


@pytest.fixture(scope="session")
def other_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("other-keys")
    keys_mod.generate(d)
    return d


class BundleMaker:
    """Write sources + bundle.json into a fresh directory and pack them."""

    def __init__(self, root: Path, keys_dir: Path) -> None:
        self.root = root
        self.keys_dir = keys_dir
        self.count = 0

    def __call__(self, files: dict[str, str], *, name: str = "test", version: str = "1.0.0",
                 system: str = "s", entries: dict[str, str] | None = None, targets: list[str] | None = None,
                 skip_policy: bool = False, keys_dir: Path | None = None, extra: dict | None = None,
                 binary: dict[str, bytes] | None = None) -> Path:
        self.count += 1
        src = self.root / f"src{self.count}"
        src.mkdir(parents=True)
        for rel, text in files.items():
            path = src / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        for rel, data in (binary or {}).items():
            (src / rel).write_bytes(data)
        manifest = {"name": name, "version": version, "system": system,
                    "entries": entries or {"b": "features:entry"}, **(extra or {})}
        (src / "bundle.json").write_text(json.dumps(manifest))
        out = self.root / f"b{self.count}.evb"
        pack(src, keys_dir or self.keys_dir, out, targets=targets or [TARGET], skip_source_policy=skip_policy)
        return out


@pytest.fixture
def make_bundle(tmp_path: Path, keys_dir: Path) -> BundleMaker:
    return BundleMaker(tmp_path, keys_dir)


def resign(data: bytes, keys_dir: Path, edit: Callable[[dict[str, Any], dict[str, Any]], None]) -> bytes:
    """A correctly signed and sealed bundle whose header and payload ``edit(header, payload)``
    changed: what an attacker who holds the signing key could ship."""
    device = keys_mod.load_device(keys_dir)
    server = keys_mod.load_server(keys_dir)
    raw = bundle_format.split(data, 1 << 30)
    header = msgpack.unpackb(raw.header, raw=False)
    content_key = SealedBox(next(iter(device.decrypt.values()))).decrypt(header["sealed_key"])
    payload = msgpack.unpackb(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        raw.ciphertext, raw.aad, header["nonce"], content_key), raw=False, strict_map_key=False)
    edit(header, payload)
    header["nonce"] = nacl.utils.random(bundle_format.NONCE_LEN)
    body = msgpack.packb(payload, use_bin_type=True)
    head = msgpack.packb(header, use_bin_type=True)
    aad = bundle_format.prefix(server.sign_key_id, server.seal_key_id, len(head), len(body) + 16) + head
    signed = aad + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, aad, header["nonce"], content_key)
    return signed + server.signing.sign(signed).signature


def forge_snapshot(keys_dir: Path, header: dict[str, Any], body: bytes, *, encrypt: bool = False,
                   flags: int | None = None, seal_to: Path | None = None) -> bytes:
    """A correctly signed feature snapshot with any header and body: what a publisher's bug, or a
    holder of the signing key, could ship (``seal_to``: a keygen directory to seal to instead)."""
    from vm.bundle import snapshot

    server = keys_mod.load_server(keys_dir)
    seal = keys_mod.load_server(seal_to).seal_to if seal_to else server.seal_to
    header = dict(header)
    seal_id = bytes(keys_mod.KEY_ID_LEN)
    if encrypt:
        key = nacl.utils.random(32)
        header["nonce"] = nacl.utils.random(bundle_format.NONCE_LEN)
        header["sealed_key"] = SealedBox(seal).encrypt(key)
        seal_id = keys_mod.key_id(bytes(seal))
    head = msgpack.packb(header, use_bin_type=True)
    clen = len(body) + (16 if encrypt else 0)
    aad = bundle_format.prefix(server.sign_key_id, seal_id, len(head), clen, magic=snapshot.MAGIC,
                               flags=(snapshot.ENCRYPTED if encrypt else 0) if flags is None else flags) + head
    if encrypt:
        body = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, aad, header["nonce"], key)
    return aad + body + server.signing.sign(aad + body).signature
