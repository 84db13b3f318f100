"""Key material: generation, files, key ids, and the device keyring.

The server holds the Ed25519 signing key and the X25519 *public* key it seals bundles to; the
device holds the Ed25519 verify key(s) it pins and the X25519 *secret* key(s) it opens bundles
with. Every key has an 8-byte id (BLAKE2b of the public key) so keys can rotate: a device may
pin several verify keys and hold several decrypt keys. Key files are written atomically (a crash
leaves the old file or the new one, never half of one), secret files with mode 0600 from their first
byte; ``generate`` refuses to replace an existing key set unless told to, since devices pinned to it
would refuse every bundle signed with the new one. No ``repr`` or error message ever contains key
bytes.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.encoding import RawEncoder
from nacl.hash import blake2b
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from vm.bundle import files
from vm.errors import BadInput, NotFound

KEY_ID_LEN = 8
SIGNING_FILE, VERIFY_FILE, SEAL_FILE, OPEN_FILE, DEVICE_FILE = (
    "signing.key", "verify.pub", "seal.pub", "open.key", "device.json")
KEY_FILES = (SIGNING_FILE, VERIFY_FILE, SEAL_FILE, OPEN_FILE, DEVICE_FILE)


def key_id(public: bytes) -> bytes:
    """The 8-byte id of a public key."""
    return blake2b(public, digest_size=KEY_ID_LEN, encoder=RawEncoder)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str, size: int) -> bytes:
    if isinstance(text, (bytes, bytearray)):
        raw = bytes(text)
    else:
        try:
            raw = base64.b64decode(str(text), validate=True)
        except ValueError:
            raise BadInput(f"{what}: not valid base64") from None
    if len(raw) != size:
        raise BadInput(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def _write_temp(path: Path, doc: dict, secret: bool) -> Path:
    """Write ``doc`` to a new temporary file beside ``path`` (0600 from creation if ``secret``),
    flushed to disk; ``_commit`` renames it into place."""
    return files.write_temp(path, (json.dumps(doc, indent=2) + "\n").encode(), secret=secret)


def _commit(out: Path, temps: dict[str, Path]) -> None:
    """Rename each temporary file over its key file (replacing an old file, and its mode, whole),
    then flush the directory so that the renames survive a crash."""
    for name, tmp in temps.items():
        os.replace(tmp, out / name)
    files.fsync_dir(out)


def _write_set(out: Path, docs: list[tuple[str, dict, bool]]) -> None:
    """Write (file name, document, secret) key files into ``out`` as one set: all temporary files
    first, then the renames (``_commit``); a failure leaves the old set."""
    temps: dict[str, Path] = {}
    try:
        for name, doc, secret in docs:
            temps[name] = _write_temp(out / name, doc, secret)
        _commit(out, temps)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class ServerKeys:
    """What ``edgevm pack`` needs: sign, and seal to the device's public key."""

    signing: SigningKey
    seal_to: PublicKey

    @property
    def sign_key_id(self) -> bytes:
        return key_id(bytes(self.signing.verify_key))

    @property
    def seal_key_id(self) -> bytes:
        return key_id(bytes(self.seal_to))

    def __repr__(self) -> str:
        return f"ServerKeys(sign={self.sign_key_id.hex()}, seal={self.seal_key_id.hex()})"


@dataclass(frozen=True)
class DeviceKeys:
    """What a device needs: pinned verify keys and its decrypt keys, each by id."""

    verify: dict[bytes, VerifyKey]
    decrypt: dict[bytes, PrivateKey]

    def __repr__(self) -> str:
        return (f"DeviceKeys(verify={[k.hex() for k in self.verify]}, "
                f"decrypt={[k.hex() for k in self.decrypt]})")


class KeysExist(BadInput):
    """``generate`` found key files in its directory and was not told to replace them."""


def existing_keys(out_dir: str | Path) -> dict[str, list[str]]:
    """The key files already in ``out_dir`` and the key ids they hold (hex, computed from the keys
    themselves): ``{"files": [...], "sign_key_ids": [...], "seal_key_ids": [...]}``."""
    out = Path(out_dir)
    found: dict[str, list[str]] = {"files": [], "sign_key_ids": [], "seal_key_ids": []}
    for name in KEY_FILES:
        path = out / name
        if not os.path.lexists(path):
            continue
        found["files"].append(name)
        for role, kid in _ids_in(path):
            if kid not in found[role]:
                found[role].append(kid)
    return found


def describe_ids(found: dict[str, list[str]]) -> str:
    """``existing_keys``' ids as text for a message: ``sign key id …, seal key id …``."""
    ids = [f"sign key id {k}" for k in found["sign_key_ids"]] + [f"seal key id {k}" for k in found["seal_key_ids"]]
    return ", ".join(ids) or "no readable key"


def _ids_in(path: Path) -> list[tuple[str, str]]:
    """(role, key id) for each key a keygen file holds; none for a file that does not parse."""
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            return []
        if path.name == DEVICE_FILE:
            ring = _device_from_doc(doc)
            return [("sign_key_ids", k.hex()) for k in ring.verify] + [("seal_key_ids", k.hex()) for k in ring.decrypt]
        if path.name == SIGNING_FILE:
            public = bytes(SigningKey(_unb64(doc.get("seed"), "signing key", 32)).verify_key)
        elif path.name == OPEN_FILE:
            public = bytes(PrivateKey(_unb64(doc.get("key"), "decrypt key", 32)).public_key)
        else:
            public = _unb64(doc.get("key"), "public key", 32)
    except (OSError, ValueError, BadInput):
        return []
    role = "sign_key_ids" if path.name in (SIGNING_FILE, VERIFY_FILE) else "seal_key_ids"
    return [(role, key_id(public).hex())]


def generate(out_dir: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Write a fresh key set into ``out_dir``; returns its key ids (hex) and, under ``replaced``,
    what ``existing_keys`` found there before. Raises ``KeysExist`` (and writes nothing) if any key
    file is already there, unless ``force``."""
    out = Path(out_dir)
    before = existing_keys(out)
    if before["files"] and not force:
        raise KeysExist(f"{out} already holds keys ({', '.join(before['files'])}: {describe_ids(before)}); "
                        "devices pinned to them would refuse bundles signed with new keys. --force replaces them",
                        detail=before)
    out.mkdir(parents=True, exist_ok=True)
    signing = SigningKey.generate()
    box = PrivateKey.generate()
    verify_raw, seal_raw = bytes(signing.verify_key), bytes(box.public_key)
    sid, eid = key_id(verify_raw).hex(), key_id(seal_raw).hex()
    verify_doc = {"type": "ed25519-verify", "key_id": sid, "key": _b64(verify_raw)}
    open_doc = {"type": "x25519-secret", "key_id": eid, "key": _b64(bytes(box))}
    files = [
        (SIGNING_FILE, {"type": "ed25519-signing", "key_id": sid, "seed": _b64(bytes(signing))}, True),
        (VERIFY_FILE, verify_doc, False),
        (SEAL_FILE, {"type": "x25519-public", "key_id": eid, "key": _b64(seal_raw)}, False),
        (OPEN_FILE, open_doc, True),
        (DEVICE_FILE, {"verify": [verify_doc], "decrypt": [open_doc]}, True),
    ]
    _write_set(out, files)
    return {"sign_key_id": sid, "seal_key_id": eid, "replaced": before}


def _read(path: Path, kind: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"key file {path} not found") from None
    except ValueError:
        raise BadInput(f"key file {path} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("type") != kind:
        raise BadInput(f"key file {path} is not a {kind} key")
    return doc


def generate_recipient(out_dir: str | Path, verify_from: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Write a decrypt-only key set into ``out_dir``: a new X25519 key pair (``seal.pub``, ``open.key``)
    and a ``device.json`` pinning the verify key of the keygen directory ``verify_from``. ``pack
    --recipient out_dir`` then seals bundles to it as well, so a server (replay) opens them without
    ever holding the fleet's decrypt key. Same refusal to replace keys as ``generate``."""
    out = Path(out_dir)
    before = existing_keys(out)
    if before["files"] and not force:
        raise KeysExist(f"{out} already holds keys ({', '.join(before['files'])}: {describe_ids(before)}); "
                        "--force replaces them", detail=before)
    vdoc = _read(Path(verify_from) / VERIFY_FILE, "ed25519-verify")
    verify_raw = _unb64(vdoc.get("key"), "verify key", 32)
    out.mkdir(parents=True, exist_ok=True)
    box = PrivateKey.generate()
    seal_raw = bytes(box.public_key)
    eid = key_id(seal_raw).hex()
    verify_doc = {"type": "ed25519-verify", "key_id": key_id(verify_raw).hex(), "key": _b64(verify_raw)}
    open_doc = {"type": "x25519-secret", "key_id": eid, "key": _b64(bytes(box))}
    docs = [(SEAL_FILE, {"type": "x25519-public", "key_id": eid, "key": _b64(seal_raw)}, False),
            (OPEN_FILE, open_doc, True), (DEVICE_FILE, {"verify": [verify_doc], "decrypt": [open_doc]}, True)]
    _write_set(out, docs)
    return {"sign_key_id": verify_doc["key_id"], "seal_key_id": eid, "replaced": before}


def load_seal_key(path: str | Path) -> PublicKey:
    """An X25519 public key to seal bundles to: a ``seal.pub`` file, or a keygen directory holding one."""
    p = Path(path)
    doc = _read(p / SEAL_FILE if p.is_dir() else p, "x25519-public")
    return PublicKey(_unb64(doc.get("key"), "seal key", 32))


def load_server(keys_dir: str | Path) -> ServerKeys:
    """The signing key and the sealing public key from a keygen directory."""
    d = Path(keys_dir)
    sdoc = _read(d / SIGNING_FILE, "ed25519-signing")
    pdoc = _read(d / SEAL_FILE, "x25519-public")
    signing = SigningKey(_unb64(sdoc.get("seed"), "signing key", 32))
    return ServerKeys(signing=signing, seal_to=PublicKey(_unb64(pdoc.get("key"), "seal key", 32)))


def _device_from_doc(doc: Any) -> DeviceKeys:
    if not isinstance(doc, dict):
        raise BadInput("device keyring must be a JSON object with 'verify' and 'decrypt' lists")
    verify: dict[bytes, VerifyKey] = {}
    decrypt: dict[bytes, PrivateKey] = {}
    for entry in _as_list(doc.get("verify")):
        raw = _unb64(entry.get("key") if isinstance(entry, dict) else entry, "verify key", 32)
        verify[key_id(raw)] = VerifyKey(raw)
    for entry in _as_list(doc.get("decrypt")):
        raw = _unb64(entry.get("key") if isinstance(entry, dict) else entry, "decrypt key", 32)
        secret = PrivateKey(raw)
        decrypt[key_id(bytes(secret.public_key))] = secret
    if not verify:
        raise BadInput("device keyring has no verify key")
    if not decrypt:
        raise BadInput("device keyring has no decrypt key")
    return DeviceKeys(verify=verify, decrypt=decrypt)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load_device(spec: Any) -> DeviceKeys:
    """The device keyring from a keygen directory, a ``device.json`` path, its bytes, or a dict
    ``{"verify": [...], "decrypt": [...]}`` of base64 keys (or ``{"key": ...}`` entries)."""
    if isinstance(spec, DeviceKeys):
        return spec
    if isinstance(spec, dict):
        return _device_from_doc(spec)
    if isinstance(spec, (bytes, bytearray, memoryview)):
        try:
            return _device_from_doc(json.loads(bytes(spec)))
        except ValueError:
            raise BadInput("device keyring bytes are not valid JSON") from None
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            path = path / DEVICE_FILE
        # The value is not echoed: a caller who pasted a key where a path belongs must not see it
        # in a log.
        try:
            text = path.read_text()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound("device keyring not found: 'keys' names no keygen directory or device.json "
                           "(inline keys go in a dict: {\"verify\": [...], \"decrypt\": [...]})") from None
        except OSError as exc:
            raise BadInput(f"device keyring cannot be read ({exc.strerror})") from None
        try:
            return _device_from_doc(json.loads(text))
        except ValueError:
            raise BadInput("device keyring is not valid JSON") from None
    raise BadInput(f"'keys' must be a directory, a device.json path, bytes or a dict, not {type(spec).__name__}")
