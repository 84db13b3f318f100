"""The bundle container, byte by byte (see docs/bundle-format.md).

    offset  size  field
    0       8     magic  89 45 56 42 0D 0A 1A 0A  ("\\x89EVB\\r\\n\\x1a\\n")
    8       2     format version, big-endian (1)
    10      2     flags (0)
    12      8     signing key id
    20      8     sealing (encryption) key id
    28      4     header length H, big-endian
    32      8     ciphertext length C, big-endian
    40      H     header: a msgpack map (parsed only after the signature verified)
    40+H    C     ciphertext: XChaCha20-Poly1305 of the payload, associated data = bytes [0, 40+H)
    40+H+C  64    Ed25519 signature over bytes [0, 40+H+C)

This module only splits and assembles; it trusts nothing. ``vm.bundle.loader`` turns the parts into
trusted state, in order: verify, decrypt, gate.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from vm.errors import BadInput, IncompatibleError

MAGIC = b"\x89EVB\r\n\x1a\n"
FORMAT_VERSION = 1
PREFIX = struct.Struct(">8sHH8s8sIQ")
PREFIX_LEN = PREFIX.size  # 40
SIG_LEN = 64
MAX_HEADER = 64 * 1024
NONCE_LEN = 24
SEALED_KEY_LEN = 80  # X25519 sealed box of a 32-byte content key
MAX_RECIPIENTS = 16  # X25519 keys one content key may be sealed to: the prefix's, plus header "recipients"


@dataclass(frozen=True)
class RawBundle:
    """The untrusted parts of a bundle, split by the lengths in its prefix."""

    version: int
    sign_key_id: bytes
    seal_key_id: bytes
    header: bytes
    ciphertext: bytes
    signature: bytes
    signed: bytes  # prefix + header + ciphertext: what the signature covers
    aad: bytes  # prefix + header: the ciphertext's associated data
    flags: int = 0


def split(data: bytes, max_size: int, *, magic: bytes = MAGIC, what: str = "bundle",
          known_flags: int = 0) -> RawBundle:
    """Split ``data`` into its parts, refusing anything that is not a well-formed container.
    ``magic``, ``what`` and ``known_flags``: the same layout carries feature snapshots
    (``vm.bundle.snapshot``)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadInput(f"a {what} must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise BadInput(f"{what} of {len(data)} bytes exceeds the limit of {max_size} bytes")
    if len(data) < PREFIX_LEN:
        if magic.startswith(data[: len(magic)]) and data:
            raise BadInput(f"truncated {what}: {len(data)} bytes, the fixed prefix alone is {PREFIX_LEN}")
        raise BadInput(f"not an edgevm {what} (too short, wrong magic)")
    found, version, flags, sign_id, seal_id, hlen, clen = PREFIX.unpack_from(data)
    if found != magic:
        raise BadInput(f"not an edgevm {what} (wrong magic)")
    if version != FORMAT_VERSION:
        raise IncompatibleError(f"{what} format version {version} is not supported (this runtime reads "
                                f"version {FORMAT_VERSION})", detail={"format_version": version})
    if flags & ~known_flags:
        raise IncompatibleError(f"{what} uses flags {flags:#06x} this runtime does not know")
    if hlen > MAX_HEADER:
        raise BadInput(f"header length {hlen} exceeds {MAX_HEADER}")
    expected = PREFIX_LEN + hlen + clen + SIG_LEN
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes after"
        raise BadInput(f"{kind} {what}: the prefix announces {expected} bytes, got {len(data)}")
    body_end = PREFIX_LEN + hlen + clen
    return RawBundle(
        version=version, sign_key_id=sign_id, seal_key_id=seal_id,
        header=data[PREFIX_LEN:PREFIX_LEN + hlen], ciphertext=data[PREFIX_LEN + hlen:body_end],
        signature=data[body_end:], signed=data[:body_end], aad=data[:PREFIX_LEN + hlen], flags=flags,
    )


def prefix(sign_key_id: bytes, seal_key_id: bytes, header_len: int, ciphertext_len: int, *,
           magic: bytes = MAGIC, flags: int = 0) -> bytes:
    """The fixed 40-byte prefix."""
    return PREFIX.pack(magic, FORMAT_VERSION, flags, sign_key_id, seal_key_id, header_len, ciphertext_len)
