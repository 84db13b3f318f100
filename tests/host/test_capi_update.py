"""The C API's over-the-air update (``edgevm_update_now``, ``edgevm_set_update_listener``) proven by a
real native host (tests/host/update_host.c, compiled with gcc against libedgevm like an app) that
updates from a channel served by a real HTTP server on loopback, and receives the listener events:
activated, confirmed, then a bad version activated, rolled back and never retried."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "host"))
sys.path.insert(0, str(ROOT / "tests" / "update"))

import hostbuild  # noqa: E402
from update_fixtures import channel, features, http_channel  # noqa: E402, F401 - fixtures


@pytest.fixture(scope="module")
def update_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("needs a C compiler")
    return hostbuild.build_host(tmp_path_factory.mktemp("host") / "update_host", source="update_host.c")


def _records(path: Path) -> list[tuple[str, object]]:
    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        tag, n = chr(data[i]), int.from_bytes(data[i + 1:i + 5], "big")
        out.append((tag, msgpack.unpackb(data[i + 5:i + 5 + n], raw=False)))
        i += 5 + n
    return out


def test_a_c_host_updates_over_http_and_hears_every_event(update_host, make_bundle, channel, http_channel,
                                                            keys_dir, tmp_path) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    update = {"channel": http_channel.url, "state_dir": str(tmp_path / "state"), "root": str(channel.root),
              "interval_s": 0, "device_id": "c-host", "probation_calls": 4, "probation_failures": 1}
    config = json.dumps({"keys": str(keys_dir), "isolation": "thread", "update": update})
    plain = json.dumps({"keys": str(keys_dir), "isolation": "thread"})
    records = tmp_path / "records"
    env = {**os.environ, "EDGEVM_PYTHONPATH": str(ROOT)}
    host = subprocess.Popen([str(update_host), config, plain, str(records)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert host.stdin is not None and host.stdout is not None
    first = host.stdout.readline()
    assert first == "waiting\n", first + host.stdout.read()
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    out, _ = host.communicate("go\n", timeout=300)
    assert host.returncode == 0, out
    assert "host: " in out and ", 0 failed" in out, out
    got = _records(records)
    reports = [[e["event"] for e in doc] for tag, doc in got if tag == "U"]  # type: ignore[union-attr]
    assert reports == [["checked", "downloaded", "activated"], ["checked", "downloaded", "activated"],
                       ["checked"], ["checked"]], reports
    heard = [(e["event"], e.get("version")) for tag, e in got if tag == "L"]  # type: ignore[union-attr]
    # every event of the first three checks, and the verdicts from the updater's own thread, in order
    assert heard == [("checked", None), ("downloaded", "1.0.0"), ("activated", "1.0.0"), ("confirmed", "1.0.0"),
                     ("checked", None), ("downloaded", "2.0.0"), ("activated", "2.0.0"), ("rolled_back", "2.0.0"),
                     ("checked", None)], heard
    rolled = next(e for tag, e in got if tag == "L" and e["event"] == "rolled_back")  # type: ignore[index]
    assert rolled["to"] == "1.0.0" and "script" in rolled["reason"], rolled  # type: ignore[index]
    assert next(doc for tag, doc in got if tag == "R") == {"version": "1.0.0", "x": 0}
    metrics = next(doc for tag, doc in got if tag == "M")
    versions = metrics["versions"]["feat"]  # type: ignore[index]
    assert versions["2.0.0"]["totals"]["faults"] == 2 and versions["2.0.0"]["totals"]["done"] == 0, versions
    assert versions["1.0.0"]["totals"]["done"] == 5 and versions["1.0.0"]["totals"]["faults"] == 0, versions
    assert metrics["bundles"] == {"feat": {"version": "1.0.0", "ab_group": None}}  # type: ignore[index]
