"""Key rotation through a new root (``edgevm keygen --tuf``, ``edgevm channel rotate``): root
version N+1 names the new keys, signed by the old and the new root key; devices follow it (also
from the root shipped with the app, several rotations behind), and refuse metadata signed only by
a revoked key, and a new root that lacks either signature."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from update_fixtures import channel, device, events, features, http_channel  # noqa: F401 - fixtures

from vm.errors import BadInput, NotFound, SignatureError
from vm.host import cli
from vm.tools import publish

ROLES = ("root", "targets", "snapshot", "timestamp")


def rotate(channel, new: Path, *roles: str) -> None:
    """``edgevm keygen --tuf`` then ``edgevm channel rotate``, as an operator runs them."""
    assert cli.main(["keygen", "--tuf", "--out", str(new), *(f"--role={r}" for r in roles)]) == 0
    assert cli.main(["channel", "rotate", str(channel.dir), "--keys", str(channel.keys), "--new-keys", str(new)]) == 0


@pytest.fixture
def on_v1(make_bundle, channel, device):
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    rt = device()
    assert events(rt.update_now())[-1] == "activated"
    return rt


def trusted_root_version(tmp_path: Path) -> int:
    return Metadata.from_bytes((tmp_path / "state" / "metadata" / "root.json").read_bytes()).signed.version


@pytest.mark.parametrize("roles", [(), ("root",), ("targets",), ("snapshot",), ("timestamp",)])
def test_a_device_follows_a_rotation(on_v1, make_bundle, channel, tmp_path, roles) -> None:
    new = tmp_path / "new-keys"
    rotate(channel, new, *roles)
    assert sorted(p.name for p in new.iterdir()) == sorted(f"tuf-{r}.pem" for r in ROLES)
    report = on_v1.update_now()
    assert events(report) == ["checked"], report  # the re-signed metadata verifies with the new root
    assert trusted_root_version(tmp_path) == 2
    publish.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"), channel.dir, new)
    assert events(on_v1.update_now())[-1] == "activated"
    assert on_v1.infer("s", "b", {})["version"] == "2.0.0"
    if roles != ("root",):  # the publisher too refuses a revoked key
        with pytest.raises(SignatureError, match="is not the (targets|snapshot|timestamp) key"):
            publish.publish(make_bundle(features("3.0.0"), name="feat", version="3.0.0"), channel.dir, channel.keys)

def test_a_device_shipped_with_an_old_root_follows_every_rotation(make_bundle, channel, device, tmp_path) -> None:
    shipped = tmp_path / "shipped-root.json"
    shutil.copy(channel.root, shipped)
    rotate(channel, tmp_path / "k2")
    rotate(publish_channel(channel, tmp_path / "k2"), tmp_path / "k3", "root", "timestamp")
    publish.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"), channel.dir, tmp_path / "k3")
    rt = device(root=str(shipped))
    assert events(rt.update_now())[-1] == "activated"
    assert trusted_root_version(tmp_path) == 3


def publish_channel(channel, keys: Path):
    return type(channel)(dir=channel.dir, keys=keys, root=channel.root)


def _write(path: Path, md: Metadata, *signers) -> bytes:
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)
    data = md.to_bytes()
    path.write_bytes(data)
    return data


def forge(channel, role: str, key_dir: Path, current: Path) -> None:
    """A new version of ``role`` signed with the key in ``key_dir``; the metadata above it (snapshot,
    timestamp) validly re-signed with the ``current`` keys, so only ``role``'s signature is wrong."""
    meta = channel.dir / "metadata"
    ch = publish.Channel(channel.dir)
    sign = lambda r, d=current: publish._signer(d, r)  # noqa: E731
    if role == Root.type:
        root = ch.root
        root.signed.version += 1
        _write(meta / f"{root.signed.version}.root.json", root, sign(Root.type, key_dir))
        return
    if role == Targets.type:
        t = ch.targets
        t.signed.version += 1
        data = _write(meta / f"{t.signed.version}.targets.json", t, sign(Targets.type, key_dir))
        ch.snapshot.signed.meta["targets.json"] = MetaFile(t.signed.version, len(data), publish._hashes(data))
    s = ch.snapshot
    s.signed.version += 1
    data = _write(meta / f"{s.signed.version}.snapshot.json", s,
                  sign(Snapshot.type, key_dir if role == Snapshot.type else current))
    ts = ch.timestamp
    ts.signed.version += 1
    ts.signed.snapshot_meta = MetaFile(s.signed.version, len(data), publish._hashes(data))
    _write(meta / "timestamp.json", ts, sign(Timestamp.type, key_dir if role == Timestamp.type else current))


@pytest.mark.parametrize("role", ROLES)
def test_metadata_signed_only_by_a_revoked_key_is_refused(on_v1, channel, tmp_path, role: str) -> None:
    new = tmp_path / "new-keys"
    rotate(channel, new, role)
    assert events(on_v1.update_now()) == ["checked"]
    forge(channel, role, channel.keys, new)  # the old key leaked: it signs a newer version
    report = on_v1.update_now()
    assert report[-1]["event"] == "refused" and report[-1]["error"] in ("signature", "bad_input"), report
    assert "not signed by the keys" in report[-1]["reason"], report
    assert trusted_root_version(tmp_path) == 2
    assert on_v1.infer("s", "b", {})["version"] == "1.0.0"


@pytest.mark.parametrize("keep", ["old", "new"])
def test_a_new_root_needs_both_the_old_and_the_new_root_key(on_v1, channel, tmp_path, keep: str) -> None:
    new = tmp_path / "new-keys"
    rotate(channel, new, "root")
    path = channel.dir / "metadata" / "2.root.json"
    md = Metadata.from_bytes(path.read_bytes())
    wanted = publish._signer(channel.keys if keep == "old" else new, Root.type).public_key.keyid
    for keyid in [k for k in md.signatures if k != wanted]:
        del md.signatures[keyid]
    path.write_bytes(md.to_bytes())
    report = on_v1.update_now()
    assert report[-1]["event"] == "refused" and report[-1]["error"] == "signature", report
    assert trusted_root_version(tmp_path) == 1
    assert on_v1.infer("s", "b", {})["version"] == "1.0.0"


def test_rotate_refuses_what_it_cannot_do(channel, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFound, match="holds no channel role key"):
        publish.rotate(channel.dir, channel.keys, empty)
    stranger = tmp_path / "stranger"
    publish.init_keys(stranger)
    new = tmp_path / "new"
    publish.init_keys(new, ["timestamp"])
    with pytest.raises(SignatureError, match="not the root key"):
        publish.rotate(channel.dir, stranger, new)  # the old root key is not the trusted one
    assert publish.status(channel.dir)["roles"]["root"]["version"] == 1
    assert cli.main(["keygen", "--tuf", "--out", str(new), "--role", "timestamp"]) == cli.exit_code(BadInput)
