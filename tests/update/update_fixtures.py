"""Shared plumbing of the update tests: a channel (role keys + signed metadata) in a directory,
a real HTTP server on loopback that serves it (with faults injected on request), and device
runtimes configured to update from it (thread mode, as the escape tests run)."""
from __future__ import annotations

import http.server
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vm.host.runtime import Runtime
from vm.tools import publish

FEATURES = """
def entry(inputs):
    if inputs.get("boom"):
        raise ValueError("boom")
    return {"version": VERSION, "x": inputs.get("x", 0) * FACTOR}
"""


def features(version: str, factor: int = 2, body: str = FEATURES) -> dict[str, str]:
    """A bundle's sources that say which version answered."""
    return {"features.py": f"VERSION = {version!r}\nFACTOR = {factor}\n" + body}


@dataclass
class ChannelDir:
    """A channel directory and its role keys."""

    dir: Path
    keys: Path
    root: Path

    def publish(self, bundle: Path, **kw: Any) -> publish.Published:
        return publish.publish(bundle, self.dir, self.keys, **kw)


@pytest.fixture
def channel(tmp_path: Path) -> ChannelDir:
    d, keys = tmp_path / "channel", tmp_path / "channel-keys"
    root = publish.init_channel(d, keys)
    return ChannelDir(dir=d, keys=keys, root=root)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files whole or by ``Range: bytes=N-`` (206), counting the body bytes it sends."""

    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        fault = next((f for key, f in self.server.faults.items() if key in self.path), None)
        self.server.requests.append(self.path)
        self.server.ranges.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file() and fault is None:
            return super().do_GET()
        data = path.read_bytes() if path.is_file() else b""
        if fault == "endless":
            self.send_response(200)
            self.end_headers()
            try:
                while not self.server.stopping:
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
            return
        asked = self.headers.get("Range", "")
        start = int(asked[6:-1]) if fault != "ignore-range" and asked.startswith("bytes=") \
            and asked.endswith("-") and asked[6:-1].isdigit() else None
        if start is not None and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if start is None:
            self.send_response(200)
            body = data
        else:  # "bad-range": a Content-Range that is not the range asked for
            self.send_response(206)
            said = 0 if fault == "bad-range" else start
            self.send_header("Content-Range", f"bytes {said}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault in ("truncate", "stall"):
            body = body[: len(body) // 2]
        self.wfile.write(body)
        self.wfile.flush()
        self.server.served[path.name] = self.server.served.get(path.name, 0) + len(body)
        if fault == "truncate":
            self.close_connection = True
        elif fault == "stall":
            while not self.server.stopping:
                time.sleep(0.05)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    faults: dict[str, str]
    requests: list[str]
    ranges: list[tuple[str, str | None]]  # (path, Range header) of each request
    served: dict[str, int]  # file name -> body bytes sent
    stopping: bool


@dataclass
class HttpChannel:
    """The channel directory served on loopback: ``faults`` maps a path fragment to ``truncate``
    (half the body, then the connection closes), ``stall`` (half, then silence), ``endless``,
    ``ignore-range`` (the whole file, 200, whatever the Range) or ``bad-range`` (a 206 whose
    Content-Range is not the range asked for)."""

    url: str
    server: _Server
    faults: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def http_channel(channel: ChannelDir) -> Iterator[HttpChannel]:
    handler = lambda *a, **kw: _Handler(*a, directory=str(channel.dir), **kw)  # noqa: E731
    server = _Server(("127.0.0.1", 0), handler)
    server.faults, server.requests, server.ranges, server.served, server.stopping = {}, [], [], {}, False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HttpChannel(url=f"http://127.0.0.1:{server.server_address[1]}", server=server, faults=server.faults)
    server.stopping = True
    server.shutdown()
    server.server_close()


@pytest.fixture
def device(tmp_path: Path, keys_dir: Path, channel: ChannelDir) -> Iterator[Callable[..., Runtime]]:
    """``device(channel=URL_OR_PATH, **update_options)``: a thread-mode runtime that updates from
    the channel (closed after the test)."""
    runtimes: list[Runtime] = []

    def make(channel_url: str | None = None, *, state: str = "state", config: dict | None = None,
             **update: Any) -> Runtime:
        opts = {"channel": channel_url or str(channel.dir), "state_dir": str(tmp_path / state),
                "root": str(channel.root), "interval_s": 0, "device_id": "device-1", **update}
        rt = Runtime({"keys": keys_dir, "isolation": "thread", "update": opts, **(config or {})})
        runtimes.append(rt)
        return rt

    yield make
    for rt in runtimes:
        rt.close()


def events(report: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in report]


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
