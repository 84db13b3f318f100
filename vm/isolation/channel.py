"""Frames between processes: a 4-byte big-endian length, then one msgpack array.

The supervisor reads what a worker sends as hostile input (a worker runs a bundle's scripts): a
length over the cap, bytes that are not msgpack, a frame of the wrong shape, or a peer that closes
mid-frame each raise ``ChannelError`` (the caller kills that worker); nothing a worker sends can
make the supervisor allocate more than the cap or wait past the deadline it was given.
"""
from __future__ import annotations

import select
import socket
import struct
import time
from typing import Any

import msgpack

_LEN = struct.Struct(">I")
MAX_FRAME = (1 << 31) - 1


class ChannelError(Exception):
    """The peer closed, sent something that is not a frame, or broke the protocol."""


class ChannelTimeout(ChannelError):
    """No whole frame arrived before the deadline."""


class ChannelClosed(ChannelError):
    """The peer closed its end or went away (for a worker: it died)."""


class Channel:
    """One end of a socketpair, sending and receiving frames (not thread-safe: one caller at a
    time per direction)."""

    def __init__(self, sock: socket.socket, *, max_frame: int) -> None:
        if not 0 < max_frame <= MAX_FRAME:
            raise ValueError(f"max_frame must be in (0, {MAX_FRAME}]")
        self.sock = sock
        self.max_frame = max_frame
        self._buf = bytearray()
        sock.setblocking(True)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, *items: Any) -> None:
        """Send one frame holding ``items`` (a msgpack array)."""
        body = msgpack.packb(list(items), use_bin_type=True)
        if len(body) > MAX_FRAME:
            raise ChannelError(f"frame of {len(body)} bytes is too large")
        try:
            self.sock.sendall(_LEN.pack(len(body)) + body, socket.MSG_NOSIGNAL)
        except OSError as exc:
            raise ChannelClosed(f"the peer is gone ({exc.strerror or exc})") from None

    def recv(self, deadline: float | None = None) -> list[Any]:
        """The next frame as a list, waiting at most until ``deadline`` (``time.monotonic()``;
        None: no limit)."""
        head = self._read(_LEN.size, deadline)
        (size,) = _LEN.unpack(head)
        if size > self.max_frame:
            raise ChannelError(f"the peer announced a frame of {size} bytes (limit {self.max_frame})")
        body = self._read(size, deadline)
        try:
            items = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
        except (ValueError, msgpack.UnpackException, TypeError, RecursionError) as exc:
            raise ChannelError(f"the peer sent bytes that are not msgpack ({type(exc).__name__})") from None
        if not isinstance(items, list) or not items or not isinstance(items[0], str):
            raise ChannelError("the peer sent a frame that is not [kind, ...]")
        return items

    def _read(self, n: int, deadline: float | None) -> bytes:
        buf = self._buf
        while len(buf) < n:
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([self.sock], [], [], wait)[0]:
                    raise ChannelTimeout("no answer before the deadline")
            try:
                chunk = self.sock.recv(min(max(n - len(buf), 1 << 12), 1 << 20))
            except InterruptedError:
                continue
            except OSError as exc:
                raise ChannelClosed(f"the peer is gone ({exc.strerror or exc})") from None
            if not chunk:
                raise ChannelClosed("the peer closed the channel")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out
