"""The supervisor reads worker frames as hostile input: a real peer process sends what a compromised
worker could, and every case ends in ChannelError (never a hang past the deadline, never an
allocation beyond the cap, never a library exception); replies that parse but lie are refused."""
from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import msgpack
import pytest

from vm.errors import BadInput, Crashed, ScriptError
from vm.isolation import pool
from vm.isolation.channel import Channel, ChannelClosed, ChannelError, ChannelTimeout

PEER = """
import os, socket, sys, time
s = socket.socket(fileno=int(sys.argv[1]))
s.sendall(sys.stdin.buffer.read())
if sys.argv[2] == "close":
    s.close()
else:
    time.sleep(30)
"""


def peer(data: bytes, then: str = "close") -> tuple[Channel, subprocess.Popen]:
    mine, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-c", PEER, str(theirs.fileno()), then],
                            pass_fds=(theirs.fileno(),), stdin=subprocess.PIPE)
    theirs.close()
    proc.stdin.write(data)  # type: ignore[union-attr]
    proc.stdin.close()  # type: ignore[union-attr]
    return Channel(mine, max_frame=1 << 20), proc


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("data, error", [
    (b"", ChannelClosed),                                         # died before saying anything
    (b"\x00\x00", ChannelClosed),                                 # half a length
    (frame(b"\x93\x01\x02\x03")[:-2], ChannelClosed),            # a frame cut short, then EOF
    (struct.pack(">I", 0xFFFFFFFF), ChannelError),                # 4 GiB announced: refused before reading
    (struct.pack(">I", (1 << 20) + 1), ChannelError),             # just over the cap
    (frame(b"\xc1"), ChannelError),                               # not msgpack (0xc1 is never used)
    (frame(b"\x92\x01\x02\x03"), ChannelError),                   # trailing bytes after one value
    (frame(msgpack.packb({"ok": 1})), ChannelError),              # not an array
    (frame(msgpack.packb([])), ChannelError),                     # an empty array
    (frame(msgpack.packb([1, 2])), ChannelError),                 # no kind
    (frame(b"\x91" * 100_000 + b"\xc0"), ChannelError),           # nesting that would exhaust the stack
])
def test_garbage_from_a_peer_is_a_channel_error(data: bytes, error: type) -> None:
    chan, proc = peer(data)
    try:
        with pytest.raises(error):
            chan.recv(time.monotonic() + 10)
    finally:
        proc.wait(10)
        chan.close()


def test_a_peer_that_goes_silent_mid_frame_is_a_timeout_at_the_deadline() -> None:
    chan, proc = peer(struct.pack(">I", 100) + b"x" * 10, then="hang")
    try:
        t0 = time.monotonic()
        with pytest.raises(ChannelTimeout):
            chan.recv(t0 + 0.3)
        assert time.monotonic() - t0 < 10
    finally:
        proc.kill()
        proc.wait(10)
        chan.close()


def test_a_well_formed_frame_is_received() -> None:
    chan, proc = peer(frame(msgpack.packb(["ok", 7, b"\x01"], use_bin_type=True)) * 2)
    try:
        assert chan.recv(time.monotonic() + 10) == ["ok", 7, b"\x01"]
        assert chan.recv(time.monotonic() + 10) == ["ok", 7, b"\x01"]
        with pytest.raises(ChannelClosed):
            chan.recv(time.monotonic() + 10)
    finally:
        proc.wait(10)
        chan.close()


@pytest.mark.parametrize("code, message, detail", [
    (Crashed.code, "x", {}),   # a worker cannot report that it crashed
    (0, "x", {}),              # 0 is success, not an error
    (12345, "x", {}),          # no such code
    (True, "x", {}),           # a bool is not a code
    ("6", "x", {}),
    (ScriptError.code, b"bytes", {}),
    (ScriptError.code, "x", ["not", "a", "dict"]),
])
def test_error_replies_that_lie_are_refused(code, message, detail) -> None:
    with pytest.raises(ChannelError):
        pool._error(code, message, detail)


def test_error_replies_become_the_typed_error() -> None:
    err = pool._error(BadInput.code, "m" * 100_000, {"file": "features.py"})
    assert isinstance(err, BadInput) and len(err.message) <= 8192 and err.detail == {"file": "features.py"}


SIGPIPE_HOST = """
import signal, socket, time
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # an embedding C host's disposition, unlike python's own
from vm.isolation.channel import Channel, ChannelClosed
from vm.isolation.supervisor import Supervisor
from vm.errors import Crashed

mine, theirs = socket.socketpair()
theirs.close()
try:
    Channel(mine, max_frame=1 << 20).send("call", 1, b"x" * 100_000)
except ChannelClosed:
    print("channel: closed")

sup = Supervisor()
sup.wait_ready(time.monotonic() + 60)
zy = sup._zy
zy.proc.kill()
zy.proc.wait()
zy.send("kill", 1)  # the control socket's peer is gone
print("control: sent")
try:
    sup.spawn(time.monotonic() + 30)
    print("spawn: served by a restarted zygote")
except Crashed:
    print("spawn: crashed")
sup.close()
"""


def test_a_dead_peer_never_raises_sigpipe_in_the_host() -> None:
    """An embedding host keeps SIGPIPE's default action (terminate): writing to a dead worker or
    zygote must be an error the supervisor handles, not the end of the host."""
    proc = subprocess.run([sys.executable, "-c", SIGPIPE_HOST], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "channel: closed" in proc.stdout and "control: sent" in proc.stdout, proc.stdout
    assert "spawn:" in proc.stdout, proc.stdout
