"""The one place where untrusted bundle bytes become trusted state.

``open_bundle`` runs the steps in a fixed order and nothing downstream sees a bundle that did
not pass all of them: split the container → verify the Ed25519 signature over prefix, header and
ciphertext with a pinned key → parse the header → open the sealed content key and decrypt the
payload (the header is the associated data) → gate on format version, ``min_runtime`` and this
interpreter's bytecode magic → validate the manifest (entries, models, triggers and tasks: the same
rules as ``edgevm pack``) → unmarshal → verify every code object. Decrypted code and models stay in
memory. ``check_version`` is the last gate, the downgrade check: the runtime calls it in the same
critical section that installs the bundle, so two concurrent loads cannot both pass it against a
stale view.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import marshal
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import nacl.exceptions
from nacl.public import SealedBox

import vm
from vm import wire
from vm.bundle import format as bundle_format
from vm.bundle import manifest as manifest_rules
from vm.bundle.keys import KEY_ID_LEN, DeviceKeys
from vm.bundle.versions import parse_version
from vm.errors import BadInput, DecryptError, Downgrade, IncompatibleError, SignatureError
from vm.policy.verifier import verify_module_code

RUNTIME_VERSION = parse_version(vm.__version__)
MAGIC_HEX = importlib.util.MAGIC_NUMBER.hex()
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class Header:
    name: str
    version: str
    created: int
    targets: list[dict[str, str]]
    min_runtime: str
    sign_key_id: str
    seal_key_id: str
    nonce: bytes = field(repr=False)
    sealed_key: bytes = field(repr=False)
    # The content key sealed to further X25519 keys (key id, sealed key), beside the prefix's (a
    # fleet's device key and a replay server's key, say); at most MAX_RECIPIENTS in all.
    recipients: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class TrustedBundle:
    """A verified, decrypted, gated bundle whose code passed the bytecode check."""

    header: Header
    manifest: manifest_rules.Manifest
    codes: dict[str, types.CodeType]
    blobs: dict[str, bytes] = field(repr=False)  # the marshalled form of ``codes``, for worker processes
    packages: frozenset[str]
    files: frozenset[str]
    models: dict[str, bytes] = field(repr=False)

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def version(self) -> str:
        return self.header.version


def check_signature(raw: bundle_format.RawBundle, device: DeviceKeys, what: str = "bundle") -> None:
    """The Ed25519 signature over prefix, header and ciphertext, with a key this device pins."""
    key = device.verify.get(raw.sign_key_id)
    if key is None:
        raise SignatureError(f"{what} is signed by key {raw.sign_key_id.hex()}, which this device does not "
                             f"pin (pinned: {', '.join(k.hex() for k in device.verify)})")
    try:
        key.verify(raw.signed, raw.signature)
    except nacl.exceptions.BadSignatureError:
        raise SignatureError(f"{what} signature does not verify: the {what} was modified or corrupted") from None


def open_sealed(raw: bundle_format.RawBundle, nonce: bytes, sealed_key: bytes, device: DeviceKeys,
                what: str = "bundle", recipients: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """Open the sealed content key with this device's key and decrypt the ciphertext (the prefix and
    header are its associated data). ``recipients``: further (key id, sealed key) pairs, checked
    by the caller; only the one this device holds is opened (no trial decryptions)."""
    sealed = dict(((raw.seal_key_id, sealed_key), *recipients))
    held = next((kid for kid in sealed if kid in device.decrypt), None)
    if held is None:
        raise DecryptError(f"{what} is sealed to key(s) {', '.join(k.hex() for k in sealed)}, which this device "
                           f"does not hold (held: {', '.join(k.hex() for k in device.decrypt)})")
    try:
        content_key = SealedBox(device.decrypt[held]).decrypt(sealed[held])
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(raw.ciphertext, raw.aad, nonce, content_key)
    except nacl.exceptions.CryptoError:
        raise DecryptError(f"{what} payload does not decrypt with this device's key") from None


def verify(raw: bundle_format.RawBundle, device: DeviceKeys) -> Header:
    """Check the signature with a pinned key; then, and only then, parse the header."""
    check_signature(raw, device)
    doc = wire.decode(raw.header, what="bundle header")
    try:
        header = Header(
            name=str(doc["name"]), version=str(doc["version"]), created=int(doc["created"]),
            targets=[dict(t) for t in doc["targets"]], min_runtime=str(doc.get("min_runtime", "0.1")),
            sign_key_id=raw.sign_key_id.hex(), seal_key_id=raw.seal_key_id.hex(),
            nonce=doc["nonce"], sealed_key=doc["sealed_key"],
        )
    except (KeyError, TypeError, ValueError):
        raise BadInput("bundle header lacks required fields") from None
    if not isinstance(header.nonce, bytes) or len(header.nonce) != bundle_format.NONCE_LEN \
            or not isinstance(header.sealed_key, bytes):
        raise BadInput("bundle header has a malformed nonce or sealed key")
    return dataclasses.replace(header, recipients=_recipients(doc.get("recipients", []), raw.seal_key_id))


def _recipients(entries: Any, first: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The header's further sealed keys, checked: a list of ``[key id, sealed key]`` pairs, at most
    ``MAX_RECIPIENTS`` with the prefix's, each id once."""
    if not isinstance(entries, list):
        raise BadInput("bundle header 'recipients' must be a list")
    if len(entries) + 1 > bundle_format.MAX_RECIPIENTS:
        raise BadInput(f"bundle is sealed to {len(entries) + 1} keys; at most {bundle_format.MAX_RECIPIENTS} "
                       f"are accepted")
    seen = {first}
    out = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], bytes)
                and len(entry[0]) == KEY_ID_LEN and isinstance(entry[1], bytes)
                and len(entry[1]) == bundle_format.SEALED_KEY_LEN):
            raise BadInput("bundle header 'recipients' holds an entry that is not [key id (8 bytes), "
                           "sealed key (80 bytes)]")
        if entry[0] in seen:
            raise BadInput(f"bundle header names recipient key {entry[0].hex()} twice")
        seen.add(entry[0])
        out.append((entry[0], entry[1]))
    return tuple(out)


def recipient_ids(raw: bundle_format.RawBundle, header: Header) -> list[bytes]:
    """The ids of every key the content key is sealed to: the prefix's first."""
    return [raw.seal_key_id, *(kid for kid, _ in header.recipients)]


def decrypt(raw: bundle_format.RawBundle, header: Header, device: DeviceKeys) -> dict[str, Any]:
    """Open the content key and decrypt the payload."""
    payload = open_sealed(raw, header.nonce, header.sealed_key, device, recipients=header.recipients)
    doc = wire.decode(payload, what="bundle payload")
    if not isinstance(doc, dict) or not isinstance(doc.get("manifest"), dict) or not isinstance(
            doc.get("code"), dict):
        raise BadInput("bundle payload lacks its manifest or code")
    return doc


def gate(header: Header, payload: dict[str, Any]) -> dict[str, bytes]:
    """This runtime's version and this interpreter's bytecode; return the code blobs to use."""
    need = parse_version(header.min_runtime, "min_runtime")
    if need > RUNTIME_VERSION:
        raise IncompatibleError(f"bundle {header.name} {header.version} needs runtime >= {header.min_runtime}; "
                                f"this is {vm.__version__}")
    blobs = payload["code"].get(MAGIC_HEX)
    if not isinstance(blobs, dict):
        have = ", ".join(f"CPython {t.get('python')} (magic {t.get('magic')})" for t in header.targets) or "none"
        raise IncompatibleError(
            f"bundle {header.name} {header.version} has no bytecode for this interpreter: it needs "
            f"CPython {PYTHON} (magic {MAGIC_HEX}); the bundle has: {have}",
            detail={"needed": {"python": PYTHON, "magic": MAGIC_HEX}, "available": header.targets})
    return blobs


def open_bundle(data: bytes, device: DeviceKeys, *, max_size: int) -> TrustedBundle:
    """Untrusted bytes in, a ``TrustedBundle`` out, or a typed error."""
    raw = bundle_format.split(data, max_size)
    header = verify(raw, device)
    payload = decrypt(raw, header, device)
    blobs = gate(header, payload)
    manifest = manifest_rules.validate(payload["manifest"], where=f"bundle {header.name} {header.version}: manifest",
                                       packed=True)
    if (manifest.name, manifest.version) != (header.name, header.version):
        raise BadInput(f"bundle header says {header.name} {header.version}, its manifest "
                       f"{manifest.name} {manifest.version}")
    module_info = manifest.doc.get("modules")
    if not isinstance(module_info, dict) or set(module_info) != set(blobs):
        raise BadInput("bundle manifest and code disagree on the modules")
    if not all(isinstance(info, dict) for info in module_info.values()):
        raise BadInput("bundle manifest describes a module with something other than an object")
    files = {name: str(info.get("file")) for name, info in module_info.items()}
    packages = frozenset(name for name, info in module_info.items() if info.get("package"))
    for business, spec in manifest.entries.items():
        if spec.partition(":")[0] not in blobs:
            raise BadInput(f"entry {business!r} names module {spec.partition(':')[0]!r}, which the bundle lacks")
    bundle_modules = frozenset(blobs)
    codes: dict[str, types.CodeType] = {}
    for name, blob in blobs.items():
        if not isinstance(blob, bytes):
            raise BadInput(f"code blob for {name} is not bytes")
        try:
            code = marshal.loads(blob)
        except (ValueError, EOFError, TypeError):
            raise BadInput(f"code blob for {name} does not unmarshal") from None
        verify_module_code(code, filename=files[name], bundle_modules=bundle_modules)
        codes[name] = code
    models = payload.get("models") or {}
    if not isinstance(models, dict) or not all(isinstance(v, bytes) for v in models.values()):
        raise BadInput("bundle models must map names to bytes")
    if set(models) != set(manifest.models):
        raise BadInput("bundle manifest and payload disagree on the models")
    return TrustedBundle(header=header, manifest=manifest, codes=codes, blobs=dict(blobs), packages=packages,
                         files=frozenset(files.values()), models=models)


def export(bundle: TrustedBundle) -> dict[str, Any]:
    """What a worker process needs of a trusted bundle, as plain data for its channel: the verified
    code blobs, the manifest and the models (never a key, nor the ciphertext)."""
    h = bundle.header
    return {"header": {"name": h.name, "version": h.version, "created": h.created, "targets": h.targets,
                       "min_runtime": h.min_runtime, "sign_key_id": h.sign_key_id, "seal_key_id": h.seal_key_id},
            "manifest": bundle.manifest.doc, "blobs": bundle.blobs, "models": bundle.models,
            "files": sorted(bundle.files), "packages": sorted(bundle.packages)}


def restore(doc: dict[str, Any]) -> TrustedBundle:
    """In a worker process: the bundle its supervisor's ``open_bundle`` verified and ``export``-ed.
    The supervisor is the worker's only peer, so this trusts ``doc``; it unmarshals the same blobs the
    supervisor verified."""
    h = doc["header"]
    header = Header(name=h["name"], version=h["version"], created=h["created"], targets=h["targets"],
                    min_runtime=h["min_runtime"], sign_key_id=h["sign_key_id"], seal_key_id=h["seal_key_id"],
                    nonce=b"", sealed_key=b"")
    manifest = manifest_rules.validate(doc["manifest"], where=f"bundle {header.name}: manifest", packed=True)
    blobs = doc["blobs"]
    return TrustedBundle(header=header, manifest=manifest, codes={n: marshal.loads(b) for n, b in blobs.items()},
                         blobs=blobs, packages=frozenset(doc["packages"]), files=frozenset(doc["files"]),
                         models=doc["models"])


def check_version(bundle: TrustedBundle, installed: str | None, *, allow_downgrade: bool) -> None:
    """The downgrade gate: refuse a bundle older than the ``installed`` version of the same name."""
    if installed is None or allow_downgrade:
        return
    if parse_version(bundle.version) < parse_version(installed):
        raise Downgrade(f"bundle {bundle.name} {bundle.version} is older than the loaded {installed}; "
                        f"refusing to downgrade")


def read_header(data: bytes, device: DeviceKeys | None, *, max_size: int) -> dict[str, Any]:
    """What ``edgevm inspect`` shows without keys: the prefix, and the header if the signature
    verifies. Never decrypts."""
    raw = bundle_format.split(data, max_size)
    info: dict[str, Any] = {"format_version": raw.version, "sign_key_id": raw.sign_key_id.hex(),
                            "seal_key_id": raw.seal_key_id.hex(), "size": len(data),
                            "header_bytes": len(raw.header), "ciphertext_bytes": len(raw.ciphertext)}
    if device is None:
        info["signature"] = "not checked (no keys given)"
        doc = wire.decode(raw.header, what="bundle header")
        info["header_unverified"] = {k: v for k, v in doc.items() if k not in ("nonce", "sealed_key")} \
            if isinstance(doc, dict) else None
        return info
    header = verify(raw, device)
    info["signature"] = "valid"
    info["recipient_key_ids"] = [k.hex() for k in recipient_ids(raw, header)]
    info["header"] = {"name": header.name, "version": header.version, "created": header.created,
                      "targets": header.targets, "min_runtime": header.min_runtime}
    return info
