"""``edgevm_track`` stores events, proven by a real native host (tests/host/track_host.c, compiled
with gcc against libedgevm like an app): the events it encodes and tracks are read back by a
script through ``edge.events`` (thread and process isolation), and bad events of every class
(not msgpack, truncated, not a map, a wrong type, a missing or unknown field, an unknown table) are
refused with ``bad_input``, counted by reason, and leave nothing in the table's file."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "host"))

import hostbuild  # noqa: E402

N = 50
READ = """
import edge

def read(inputs):
    return edge.events.query("clicks", fields=["ts", "item_id", "price", "query_text"])
"""
TABLES = {"clicks": {"fields": {"type": "str", "item_id": "int", "price": "float", "query_text": "str"},
                     "sensitive": True, "indexes": ["type"]}}


@pytest.fixture(scope="module")
def track_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("needs a C compiler")
    return hostbuild.build_host(tmp_path_factory.mktemp("host") / "track_host", source="track_host.c")


def _records(path: Path) -> dict[str, object]:
    data, out, i = path.read_bytes(), {}, 0
    while i < len(data):
        tag, n = chr(data[i]), int.from_bytes(data[i + 1:i + 5], "big")
        out[tag] = msgpack.unpackb(data[i + 5:i + 5 + n], raw=False)
        i += 5 + n
    return out


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_c_host_tracks_events_that_scripts_read(track_host: Path, make_bundle, keys_dir: Path, tmp_path: Path,
                                                  isolation: str) -> None:
    bundle = make_bundle({"features.py": READ}, entries={"read": "features:read"},
                         extra={"events": {"reads": ["clicks"]}})
    data = tmp_path / "data"
    config = json.dumps({"keys": str(keys_dir), "isolation": isolation,
                         "data": {"dir": str(data), "durability": "durable", "tables": TABLES}})
    records = tmp_path / "records"
    env = {**os.environ, "EDGEVM_PYTHONPATH": str(ROOT)}
    run = subprocess.run([str(track_host), config, str(bundle), str(records), str(N)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0 and ", 0 failed" in run.stdout, run.stdout + run.stderr
    got = _records(records)
    assert got["R"] == {"ts": [1_000_000 + i for i in range(N)], "item_id": list(range(N)),
                        "price": [i + 0.5 for i in range(N)], "query_text": [f"secret query {i}" for i in range(N)]}
    events = got["M"]["events"]  # type: ignore[index]
    assert events["refused"] == {"invalid_msgpack": 2, "not_a_map": 1, "invalid_event": 3, "unknown_table": 1}, events
    assert events["tables"]["clicks"]["stored"] == N and events["tables"]["clicks"]["refused"] == 3, events
    with sqlite3.connect(data / "clicks.db") as db:  # nothing of a refused event reached the file
        assert db.execute("SELECT count(*), min(ts), max(ts) FROM events").fetchone() == (N, 1_000_000, 1_000_000 + N - 1)
    raw = b"".join(p.read_bytes() for p in data.iterdir())
    assert b"secret query" not in raw  # the sealed field never reaches the disk in clear
