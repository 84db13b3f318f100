"""Feature snapshots delivered through the update channel (docs/snapshots.md): published as TUF
targets of kind ``snapshot``, verified by TUF and then by their own signature, activated by the
updater, refused when tampered with, badly signed or older, while the old snapshot keeps serving;
over loopback HTTP and from a plain directory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from update_fixtures import channel, device, events, http_channel  # noqa: F401 - fixtures

from vm.bundle.channel import snapshot_target_path
from vm.errors import BadInput
from vm.tools import publish
from vm.tools import snapshot as builder

READER = """
import edge


def entry(inputs):
    cols = edge.features.get("pop")
    return {"version": edge.features.version("pop"), "score": float(cols["score"][0])}
"""


def pop(tmp_path: Path, keys_dir: Path, version: int, *, encrypt: bool = True) -> Path:
    out = tmp_path / f"pop-{version}-{keys_dir.name}.evs"
    builder.build("pop", f"{version}.0", keys_dir, out, encrypt=encrypt,
                  columns={"score": np.full(1000, version, dtype=np.float32)})
    return out


def snap_events(report: list[dict]) -> list[tuple[str, str]]:
    return [(e["event"], e.get("version", "")) for e in report if "snapshot" in e]


@pytest.fixture
def reader(make_bundle, channel) -> None:
    channel.publish(make_bundle({"features.py": READER}, name="reader", extra={"snapshots": ["pop"]}))


@pytest.mark.parametrize("transport", ["http", "directory"])
def test_published_snapshots_reach_scripts_over_the_channel(tmp_path: Path, keys_dir: Path, channel, device,
                                                           http_channel, reader, transport: str) -> None:
    published = publish.publish_snapshot(pop(tmp_path, keys_dir, 1), channel.dir, channel.keys)
    assert published.offer.name == "pop" and published.path.is_file()
    rt = device(http_channel.url if transport == "http" else None)
    report = rt.update_now()
    assert snap_events(report) == [("downloaded", "1.0"), ("activated", "1.0")], report
    assert rt.infer("s", "b", {}) == {"version": "1.0", "score": 1.0}
    publish.publish_snapshot(pop(tmp_path, keys_dir, 2), channel.dir, channel.keys)
    assert snap_events(rt.update_now()) == [("downloaded", "2.0"), ("activated", "2.0")]
    assert rt.infer("s", "b", {}) == {"version": "2.0", "score": 2.0}
    assert snap_events(rt.update_now()) == []  # nothing new: nothing fetched
    if transport == "http":
        assert sum("snapshots/pop" in r for r in http_channel.server.requests) == 2
    status = publish.status(channel.dir)
    assert [(s["name"], s["version"]) for s in status["snapshots"]] == [("pop", "1.0"), ("pop", "2.0")]
    assert [b["name"] for b in status["bundles"]] == ["reader"]


def test_a_tampered_snapshot_on_the_channel_is_refused_and_the_old_one_serves(tmp_path: Path, keys_dir: Path,
                                                                             channel, device, http_channel,
                                                                             reader) -> None:
    publish.publish_snapshot(pop(tmp_path, keys_dir, 1), channel.dir, channel.keys)
    rt = device(http_channel.url)
    rt.update_now()
    second = publish.publish_snapshot(pop(tmp_path, keys_dir, 2), channel.dir, channel.keys)
    good = second.path.read_bytes()
    for bad in (good[:-1] + bytes([good[-1] ^ 1]), good[: len(good) // 2], good + b"\0"):
        second.path.write_bytes(bad)
        report = rt.update_now()
        assert [e for e in report if e["event"] == "activated"] == [], report
        assert [(e["event"], e["error"]) for e in report if "snapshot" in e] in (
            [("refused", "bad_input")], [("refused", "resource")]), report  # resource: longer than its metadata
        assert rt.infer("s", "b", {})["version"] == "1.0"
    second.path.write_bytes(good)
    assert snap_events(rt.update_now())[-1] == ("activated", "2.0")


@pytest.mark.parametrize("fault", ["truncate", "stall"])
def test_a_broken_download_is_refused_then_retried(tmp_path: Path, keys_dir: Path, channel, device, http_channel,
                                                  reader, fault: str) -> None:
    publish.publish_snapshot(pop(tmp_path, keys_dir, 1), channel.dir, channel.keys)
    rt = device(http_channel.url, timeout_s=0.5)
    http_channel.faults["snapshots/pop"] = fault
    report = rt.update_now()
    assert [e["event"] for e in report if "snapshot" in e] == ["refused"], report
    del http_channel.faults["snapshots/pop"]
    assert snap_events(rt.update_now())[-1] == ("activated", "1.0")


def test_a_snapshot_signed_with_a_key_the_device_does_not_pin_is_refused_and_not_fetched_again(
        tmp_path: Path, keys_dir: Path, other_keys_dir: Path, channel, device, http_channel, reader) -> None:
    publish.publish_snapshot(pop(tmp_path, keys_dir, 1), channel.dir, channel.keys)
    rt = device(http_channel.url)
    rt.update_now()
    publish.publish_snapshot(pop(tmp_path, other_keys_dir, 2), channel.dir, channel.keys)  # the channel signs it
    report = rt.update_now()
    assert [(e["event"], e.get("error")) for e in report if "snapshot" in e] == [
        ("downloaded", None), ("refused", "signature")], report
    assert rt.infer("s", "b", {})["version"] == "1.0"
    before = len(http_channel.server.requests)
    assert snap_events(rt.update_now()) == []
    assert not any("snapshots/pop" in r for r in http_channel.server.requests[before:])


def test_the_device_never_goes_below_the_highest_snapshot_it_activated(tmp_path: Path, keys_dir: Path, channel,
                                                                      device, reader) -> None:
    rt = device()
    rt.load_snapshot(pop(tmp_path, keys_dir, 5))  # delivered locally, kept in update.state_dir/snapshots
    publish.publish_snapshot(pop(tmp_path, keys_dir, 3), channel.dir, channel.keys)
    report = rt.update_now()
    assert [(e["event"], e.get("error")) for e in report if "snapshot" in e] == [("refused", "downgrade")], report
    assert rt.infer("s", "b", {})["version"] == "5.0"
    rt.close()
    rt = device()  # a restart: the floor and the active version are persisted
    assert rt.snapshot_floor("pop") == "5.0" and rt.infer("s", "b", {})["version"] == "5.0"
    publish.publish_snapshot(pop(tmp_path, keys_dir, 6), channel.dir, channel.keys)
    assert snap_events(rt.update_now())[-1] == ("activated", "6.0")


def test_the_publisher_refuses_a_version_not_above_the_published_one(tmp_path: Path, keys_dir: Path,
                                                                     channel) -> None:
    publish.publish_snapshot(pop(tmp_path, keys_dir, 2), channel.dir, channel.keys)
    for version in (2, 1):
        with pytest.raises(BadInput, match="not above"):
            publish.publish_snapshot(pop(tmp_path, keys_dir, version, encrypt=False), channel.dir, channel.keys)
    with pytest.raises(BadInput, match="not an edgevm snapshot"):
        publish.publish_snapshot(channel.root, channel.dir, channel.keys)
    assert snapshot_target_path("pop", "2.0") in publish.Channel(channel.dir).targets.signed.targets
