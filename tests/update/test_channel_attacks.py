"""Attacks on the update channel, each class with several variants, against a real HTTP server on
loopback (and a plain directory where the transport does not matter): the device refuses with a
typed error, keeps serving the version it had, and takes the real update once the attack stops.

Classes: broken transport (truncated, stalled, endless bodies), tampered targets (hash, length),
replayed or mixed metadata (rollback, mix-and-match), frozen metadata (expired), wrong keys
(metadata signed by a key the root does not trust; a bundle signed with a key the device does not
pin)."""
from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Timestamp
from update_fixtures import ChannelDir, channel, device, events, features, http_channel  # noqa: F401 - fixtures

from vm.errors import SignatureError
from vm.tools import publish


@pytest.fixture
def serving(make_bundle, channel, http_channel, device):
    """A device on v1 over HTTP, and v2 published: what the attacks try to spoil."""
    v1 = make_bundle(features("1.0.0"), name="feat", version="1.0.0")
    v2 = make_bundle(features("2.0.0"), name="feat", version="2.0.0")
    channel.publish(v1)
    rt = device(http_channel.url, timeout_s=0.5)
    assert events(rt.update_now())[-1] == "activated"
    channel.publish(v2)
    return rt


def still_v1(rt) -> None:
    assert rt.infer("s", "b", {"x": 1})["version"] == "1.0.0"


def refused(report, error: str) -> dict:
    last = report[-1]
    assert last["event"] == "refused" and last["error"] == error, report
    return last


def recovers(rt) -> None:
    """The attack stopped: the next check takes v2."""
    assert events(rt.update_now())[-1] == "activated"
    assert rt.infer("s", "b", {"x": 1})["version"] == "2.0.0"


def target_file(channel: ChannelDir, version: str) -> Path:
    (path,) = (channel.dir / "targets" / "feat").glob(f"*.{version}.evb")
    return path


# -- broken transport ----------------------------------------------------------------------------

@pytest.mark.parametrize("fault, where, error", [
    ("truncate", "/targets/", "not_found"),       # connection closed mid-body: the download failed
    ("stall", "/targets/", "timeout"),            # half the body, then silence
    ("stall", "timestamp.json", "timeout"),
    ("endless", "/targets/", "resource"),         # stops at the target's signed length
    ("endless", "timestamp.json", "resource"),    # stops at the timestamp's cap
    ("endless", ".snapshot.json", "resource"),    # stops at the length the timestamp gives
])
def test_broken_transport_is_refused_and_retried(serving, http_channel, fault: str, where: str, error: str) -> None:
    http_channel.faults[where] = fault
    refused(serving.update_now(), error)
    still_v1(serving)
    http_channel.faults.clear()
    recovers(serving)


# -- tampered targets ----------------------------------------------------------------------------

@pytest.mark.parametrize("tamper, error", [
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "bad_input"),   # one bit flipped: the hash
    (lambda data: data[: len(data) // 2], "bad_input"),               # truncated on the server: length
    (lambda data: data + b"\0" * 100, "resource"),                    # longer than signed: length cap
    (lambda data: b"", "bad_input"),
])
def test_a_target_that_does_not_match_its_metadata_is_refused(serving, channel, tamper, error: str) -> None:
    path = target_file(channel, "2.0.0")
    good = path.read_bytes()
    path.write_bytes(tamper(good))
    refused(serving.update_now(), error)
    still_v1(serving)
    path.write_bytes(good)
    recovers(serving)


# -- replayed and mixed metadata -----------------------------------------------------------------

def _resign(channel: ChannelDir, md: Metadata, role: str) -> bytes:
    md.signatures.clear()
    md.sign(publish._signer(channel.keys, role))
    return md.to_bytes()


def test_a_replayed_old_timestamp_is_refused(make_bundle, channel, http_channel, device) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    old = (channel.dir / "metadata" / "timestamp.json").read_bytes()
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    rt = device(http_channel.url)
    assert events(rt.update_now())[-1] == "activated"
    (channel.dir / "metadata" / "timestamp.json").write_bytes(old)  # validly signed, but older
    refused(rt.update_now(), "downgrade")
    assert rt.infer("s", "b", {})["version"] == "2.0.0"


def test_a_new_timestamp_naming_an_old_snapshot_is_refused(serving, channel) -> None:
    recovers(serving)  # trusts timestamp/snapshot 3 now
    ts = Metadata.from_bytes((channel.dir / "metadata" / "timestamp.json").read_bytes())
    old_snap = (channel.dir / "metadata" / "2.snapshot.json").read_bytes()
    ts.signed.version += 1
    ts.signed.snapshot_meta = MetaFile(2, len(old_snap), publish._hashes(old_snap))
    (channel.dir / "metadata" / "timestamp.json").write_bytes(_resign(channel, ts, Timestamp.type))
    refused(serving.update_now(), "downgrade")


@pytest.mark.parametrize("mix", ["old_snapshot_content", "old_targets_content", "snapshot_names_old_targets"])
def test_mix_and_match_of_metadata_versions_is_refused(serving, channel, mix: str) -> None:
    meta = channel.dir / "metadata"
    if mix == "old_snapshot_content":  # the timestamp's hash of snapshot 3 no longer matches
        shutil.copy(meta / "2.snapshot.json", meta / "3.snapshot.json")
        error = "bad_input"
    elif mix == "old_targets_content":
        shutil.copy(meta / "2.targets.json", meta / "3.targets.json")
        error = "bad_input"
    else:  # validly signed snapshot and timestamp, but the snapshot goes back to an older targets
        snap = Metadata.from_bytes((meta / "3.snapshot.json").read_bytes())
        snap.signed.meta["targets.json"] = MetaFile(1)
        data = _resign(channel, snap, Snapshot.type)
        (meta / "3.snapshot.json").write_bytes(data)
        ts = Metadata.from_bytes((meta / "timestamp.json").read_bytes())
        ts.signed.snapshot_meta = MetaFile(3, len(data), publish._hashes(data))
        (meta / "timestamp.json").write_bytes(_resign(channel, ts, Timestamp.type))
        error = "downgrade"  # the device trusts targets 2 already
    refused(serving.update_now(), error)
    still_v1(serving)


# -- frozen metadata -----------------------------------------------------------------------------

@pytest.mark.parametrize("role", [Timestamp.type, Snapshot.type, "targets"])
def test_expired_metadata_is_refused(make_bundle, channel, device, role: str) -> None:
    long = timedelta(days=30)
    expires = {r: long for r in ("timestamp", "snapshot", "targets")} | {role: timedelta(seconds=-60)}
    rt = device(str(channel.dir))
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"), expires=expires)
    report = rt.update_now()
    assert refused(report, "signature")["reason"].count("expired"), report
    assert rt.bundles() == []


def test_a_device_that_saw_fresh_metadata_refuses_it_once_expired(make_bundle, channel, device) -> None:
    """The server stops re-signing (a freeze): the device keeps what it has and refuses to update."""
    rt = device(str(channel.dir))
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    assert events(rt.update_now())[-1] == "activated"
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"),
                    now=datetime.now(UTC) - timedelta(days=2))  # what an attacker replays two days later
    refused(rt.update_now(), "signature")
    assert rt.infer("s", "b", {})["version"] == "1.0.0"


# -- wrong keys ----------------------------------------------------------------------------------

@pytest.mark.parametrize("role", [Timestamp.type, Snapshot.type, "targets"])
def test_metadata_signed_with_a_key_the_root_does_not_trust_is_refused(serving, channel, tmp_path, role) -> None:
    other = tmp_path / "other-channel-keys"
    publish.init_keys(other)
    meta = channel.dir / "metadata"
    name = {"timestamp": "timestamp.json", "snapshot": "3.snapshot.json", "targets": "3.targets.json"}[role]
    md = Metadata.from_bytes((meta / name).read_bytes())
    md.signatures.clear()
    md.sign(publish._signer(other, role))
    (meta / name).write_bytes(md.to_bytes())
    report = serving.update_now()
    assert report[-1]["event"] == "refused" and report[-1]["error"] in ("signature", "bad_input"), report
    still_v1(serving)


def test_the_publisher_refuses_a_role_key_the_root_does_not_trust(make_bundle, channel, tmp_path) -> None:
    other = tmp_path / "other-channel-keys"
    publish.init_keys(other)
    with pytest.raises(SignatureError, match="not the targets key"):
        publish.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"), channel.dir, other)


def test_a_bundle_signed_with_a_key_the_device_does_not_pin_is_refused_and_not_retried(
        serving, channel, make_bundle, other_keys_dir) -> None:
    rogue = make_bundle(features("3.0.0"), name="feat", version="3.0.0", keys_dir=other_keys_dir)
    channel.publish(rogue)  # the channel's keys vouch for it; the bundle's own signature does not verify
    report = serving.update_now()
    assert events(report) == ["checked", "downloaded", "refused"] and report[-1]["error"] == "signature", report
    still_v1(serving)
    report = serving.update_now()  # 3.0.0 is known bad: never downloaded again; 2.0.0 is the best left
    assert events(report) == ["checked", "downloaded", "activated"] and report[-1]["version"] == "2.0.0", report
    assert events(serving.update_now()) == ["checked"]
