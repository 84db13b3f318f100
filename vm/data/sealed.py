"""Sealing a sensitive table's payload at rest: XChaCha20-Poly1305 (PyNaCl's SecretBox) with a key
derived from the device's decrypt key (the one bundles are sealed to) and the table's file name.

The derivation is BLAKE2b keyed with the device's private key, personalised for the event store:
the key never touches the disk, each table has its own (a payload moved to another table does not
open), and the file records only the key id it was written with. The sealed message also holds the
row's ``ts``, so a payload moved to another row of the same table is detected when it is opened.
"""
from __future__ import annotations

from typing import Any

import msgpack
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.secret
import nacl.utils

from vm.bundle.keys import DeviceKeys
from vm.errors import DecryptError, NotFound

PERSON = b"edgevm.events.1"


class Sealer:
    """Seals and opens one table's payloads."""

    __slots__ = ("_box", "key_id")

    def __init__(self, keys: DeviceKeys, table_file: str, key_id: bytes | None = None) -> None:
        if key_id is None:
            if not keys.decrypt:
                raise NotFound("a sensitive table needs a device decrypt key (config 'keys')")
            key_id = next(iter(keys.decrypt))
        private = keys.decrypt.get(key_id)
        if private is None:
            raise DecryptError(f"table file {table_file} was sealed with device key {key_id.hex()}, "
                               "which this device's keyring does not hold")
        key = nacl.hash.blake2b(table_file.encode(), key=bytes(private), person=PERSON, digest_size=32,
                                encoder=nacl.encoding.RawEncoder)
        self._box = nacl.secret.SecretBox(key)
        self.key_id = key_id

    def seal(self, ts: int, values: list[Any]) -> bytes:
        """The payload of one row: ``ts`` and the sealed fields' values, encrypted and authenticated."""
        return bytes(self._box.encrypt(msgpack.packb([ts, *values], use_bin_type=True)))

    def open(self, ts: int, payload: bytes) -> list[Any]:
        """The sealed fields' values of the row at ``ts``; ``DecryptError`` if the payload was
        altered, belongs to another row or table, or was sealed with another key."""
        try:
            values = msgpack.unpackb(self._box.decrypt(payload), raw=False, use_list=True)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise DecryptError("a sealed event payload does not open (altered, or sealed with another key)") \
                from None
        if not isinstance(values, list) or not values or values[0] != ts:
            raise DecryptError("a sealed event payload belongs to another row")
        return values[1:]
