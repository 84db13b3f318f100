"""``edgevm channel rollback DIR NAME``: the previous version's contents published again as a new,
higher version, re-sealed and re-signed with the bundle keys and with fresh TUF metadata. Devices
move forward to it (they never accept a lower version, whatever the channel says)."""
from __future__ import annotations

import pytest
from update_fixtures import channel, device, events, features  # noqa: F401 - fixtures

from vm.bundle import keys, loader
from vm.errors import BadInput, NotFound, SignatureError
from vm.host import cli
from vm.tools import publish
from vm.update.updater import bucket

MAX = 1 << 30


def contents(data: bytes, keys_dir) -> tuple:
    """What a bundle runs: its code, models and manifest but for the version."""
    b = loader.open_bundle(data, keys.load_device(keys_dir), max_size=MAX)
    manifest = {k: v for k, v in b.manifest.doc.items() if k != "version"}
    return b.blobs, b.models, manifest, b.header.targets, b.header.min_runtime


def stored(channel, version: str) -> bytes:
    (path,) = (channel.dir / "targets" / "feat").glob(f"*.{version}.evb")
    return path.read_bytes()


def rollback(channel, keys_dir, *extra: str) -> int:
    return cli.main(["channel", "rollback", str(channel.dir), "feat", "--keys", str(channel.keys),
                     "--bundle-keys", str(keys_dir), *extra])


def test_a_device_on_the_bad_version_moves_forward_to_the_old_contents(
        make_bundle, channel, device, keys_dir, capsys) -> None:
    channel.publish(make_bundle(features("1.0.0", factor=2), name="feat", version="1.0.0"))
    channel.publish(make_bundle(features("2.0.0", factor=3), name="feat", version="2.0.0"), rollout=50)
    rt = device(device_id=next(f"d{i}" for i in range(100) if bucket(f"d{i}", "feat") < 5000))
    assert events(rt.update_now())[-1] == "activated"
    assert rt.infer("s", "b", {"x": 1}) == {"version": "2.0.0", "x": 3}
    assert rollback(channel, keys_dir) == 0
    assert "contents of 1.0.0 as 2.0.1" in capsys.readouterr().out
    report = rt.update_now()
    assert events(report) == ["checked", "downloaded", "activated"] and report[-1]["version"] == "2.0.1", report
    assert rt.infer("s", "b", {"x": 1}) == {"version": "1.0.0", "x": 2}  # 1.0.0's script answers
    assert [b["version"] for b in rt.bundles()] == ["2.0.1"]
    assert contents(stored(channel, "2.0.1"), keys_dir) == contents(stored(channel, "1.0.0"), keys_dir)
    row = publish.status(channel.dir)["bundles"][-1]
    assert (row["version"], row["reissue_of"], row["rollout"]) == ("2.0.1", "1.0.0", 50)  # for 2.0.0's devices
    roles = publish.status(channel.dir)["roles"]
    assert (roles["targets"]["version"], roles["timestamp"]["version"]) == (4, 4)  # fresh metadata


def test_the_device_still_refuses_a_lower_version_whatever_the_channel_offers(
        make_bundle, channel, device, keys_dir) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    rt = device()
    assert events(rt.update_now())[-1] == "activated"
    with pytest.raises(BadInput, match="not above the published"):  # the publisher never goes down
        channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    # a channel hand-edited to offer only 1.0.0 again, validly signed by the channel's own keys
    ch = publish.Channel(channel.dir)
    del ch.targets.signed.targets["feat/2.0.0.evb"]
    ch.commit(channel.keys)
    report = rt.update_now()
    assert report[-1]["event"] == "refused" and report[-1]["error"] == "downgrade", report
    assert rt.infer("s", "b", {})["version"] == "2.0.0"


def test_a_second_rollback_goes_further_back_not_to_the_bad_version(make_bundle, channel, keys_dir) -> None:
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        channel.publish(make_bundle(features(v), name="feat", version=v))
    assert rollback(channel, keys_dir) == 0  # 3.0.1 = 2.0.0
    assert rollback(channel, keys_dir, "--version", "4.0.0") == 0  # 2.0.0 was bad too: 4.0.0 = 1.0.0
    assert [(b["version"], b["reissue_of"]) for b in publish.status(channel.dir)["bundles"]] == \
        [("1.0.0", None), ("2.0.0", None), ("3.0.0", None), ("3.0.1", "2.0.0"), ("4.0.0", "1.0.0")]
    assert contents(stored(channel, "4.0.0"), keys_dir) == contents(stored(channel, "1.0.0"), keys_dir)
    with pytest.raises(BadInput, match="no version published before 1.0.0"):
        publish.rollback(channel.dir, channel.keys, keys_dir, "feat")


def test_rollback_refuses_what_it_cannot_do(make_bundle, channel, keys_dir, other_keys_dir, tmp_path) -> None:
    with pytest.raises(NotFound, match="no bundle 'feat'"):
        publish.rollback(channel.dir, channel.keys, keys_dir, "feat")
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    with pytest.raises(BadInput, match="no version published before"):
        publish.rollback(channel.dir, channel.keys, keys_dir, "feat")
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    assert rollback(channel, other_keys_dir) == cli.exit_code(SignatureError)  # not the keys it was signed with
    with pytest.raises(BadInput, match="not above the published"):
        publish.rollback(channel.dir, channel.keys, keys_dir, "feat", version="1.5.0")
    (path,) = (channel.dir / "targets" / "feat").glob("*.1.0.0.evb")
    path.write_bytes(path.read_bytes()[:-1])  # the stored previous version was damaged
    with pytest.raises(BadInput, match="does not match its signed length and hash"):
        publish.rollback(channel.dir, channel.keys, keys_dir, "feat")
    assert [b["version"] for b in publish.status(channel.dir)["bundles"]] == ["1.0.0", "2.0.0"]

