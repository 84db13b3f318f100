"""Sealing a sensitive table's payload at rest: XSalsa20-Poly1305 (libsodium's secretbox, through
PyNaCl's bindings: the layout of ``nacl.secret.SecretBox``, nonce then box) with a key
derived from the device's decrypt key (the one bundles are sealed to) and the table's file name.

The derivation is BLAKE2b keyed with the device's private key, personalised for the event store:
the key never touches the disk, each table has its own (a payload moved to another table does not
open), and the file records only the key id it was written with. The sealed message also holds the
row's ``ts``, so a payload moved to another row of the same table is detected when it is opened.
"""
from __future__ import annotations

import os
from typing import Any

import msgpack
import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash

from vm.bundle.keys import DeviceKeys
from vm.errors import DecryptError, NotFound

PERSON = b"edgevm.events.1"
NONCE = nacl.bindings.crypto_secretbox_NONCEBYTES


class Sealer:
    """Seals and opens one table's payloads."""

    __slots__ = ("_key", "key_id")

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
        self._key = key
        self.key_id = key_id

    @staticmethod
    def message(ts: int, values: list[Any]) -> bytes:
        """What one row's payload seals: its ``ts`` and the sealed fields' values, as msgpack."""
        return msgpack.packb([ts, *values], use_bin_type=True)

    def seal(self, message: bytes) -> bytes:
        """The payload of one row: its ``message`` encrypted and authenticated under a random nonce
        (the bindings directly: the ``SecretBox`` wrapper is a third of the cost per event)."""
        nonce = os.urandom(NONCE)
        return nonce + nacl.bindings.crypto_secretbox(message, nonce, self._key)

    def open(self, ts: int, payload: bytes) -> list[Any]:
        """The sealed fields' values of the row at ``ts``; ``DecryptError`` if the payload was
        altered, belongs to another row or table, or was sealed with another key."""
        try:
            values = msgpack.unpackb(nacl.bindings.crypto_secretbox_open(payload[NONCE:], payload[:NONCE], self._key),
                                     raw=False, use_list=True)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise DecryptError("a sealed event payload does not open (altered, or sealed with another key)") \
                from None
        if not isinstance(values, list) or not values or values[0] != ts:
            raise DecryptError("a sealed event payload belongs to another row")
        return values[1:]
