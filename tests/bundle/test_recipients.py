"""A bundle's content key sealed to several X25519 keys (the device fleet's and a replay server's):
each holder opens it with its own secret, no one needs another's, and a header that lists too many,
malformed or repeated recipients is refused before any of them is tried."""
from __future__ import annotations

from pathlib import Path

import nacl.utils
import pytest
from conftest import resign
from nacl.public import PrivateKey

from vm.bundle import format as bundle_format
from vm.bundle import keys
from vm.bundle.loader import open_bundle, read_header
from vm.errors import BadInput, DecryptError
from vm.host.runtime import Runtime
from vm.tools.packer import pack

SCRIPT = {"features.py": "def entry(inputs):\n    return {'twice': inputs['x'] * 2}\n"}
MAX = 1 << 30


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Path:
    d = tmp_path_factory.mktemp("replay-keys")
    keys.generate_recipient(d, keys_dir)
    return d


def _stranger(keys_dir: Path) -> keys.DeviceKeys:
    """A keyring that pins the fleet's verify key but holds an unrelated decrypt key."""
    fleet = keys.load_device(keys_dir)
    return keys.DeviceKeys(verify=dict(fleet.verify), decrypt={keys.key_id(bytes(k.public_key)): k
                                                               for k in [PrivateKey.generate()]})


def test_fleet_and_replay_keys_each_open_a_bundle_sealed_to_both(make_bundle, keys_dir: Path,
                                                                  replay_dir: Path, tmp_path: Path) -> None:
    src = make_bundle(SCRIPT).parent / "src1"
    out = tmp_path / "both.evb"
    pack(src, keys_dir, out, targets=["3.11"], recipients=[replay_dir / keys.SEAL_FILE])
    data = out.read_bytes()
    fleet, replay = keys.load_device(keys_dir), keys.load_device(replay_dir)
    assert not set(fleet.decrypt) & set(replay.decrypt)
    for ring in (fleet, replay):
        assert open_bundle(data, ring, max_size=MAX).name == "test"
    ids = read_header(data, replay, max_size=MAX)["recipient_key_ids"]
    assert ids == [k.hex() for k in (*fleet.decrypt, *replay.decrypt)]
    with pytest.raises(DecryptError) as err:
        open_bundle(data, _stranger(keys_dir), max_size=MAX)
    assert all(i in err.value.message for i in ids)
    for ring in (keys_dir, replay_dir / keys.DEVICE_FILE):
        with Runtime({"keys": ring, "isolation": "thread"}) as rt:
            rt.load(data)
            assert rt.infer("s", "b", {"x": 21}) == {"twice": 42}


def test_a_bundle_without_further_recipients_is_what_older_packers_wrote(make_bundle, keys_dir: Path,
                                                                         replay_dir: Path) -> None:
    data = make_bundle(SCRIPT).read_bytes()
    assert b"recipients" not in bundle_format.split(data, MAX).header
    assert open_bundle(data, keys.load_device(keys_dir), max_size=MAX).header.recipients == ()
    with pytest.raises(DecryptError, match="which this device does not hold"):
        open_bundle(data, keys.load_device(replay_dir), max_size=MAX)


def test_pack_names_each_recipient_once_and_bounds_their_number(make_bundle, keys_dir: Path, replay_dir: Path,
                                                                tmp_path: Path) -> None:
    src = make_bundle(SCRIPT).parent / "src1"
    out = tmp_path / "dup.evb"
    pack(src, keys_dir, out, targets=["3.11"], recipients=[replay_dir, replay_dir / keys.SEAL_FILE, keys_dir])
    header = open_bundle(out.read_bytes(), keys.load_device(replay_dir), max_size=MAX).header
    assert [kid for kid, _ in header.recipients] == list(keys.load_device(replay_dir).decrypt)
    many = []
    for i in range(bundle_format.MAX_RECIPIENTS):
        d = tmp_path / f"r{i}"
        keys.generate_recipient(d, keys_dir)
        many.append(d)
    with pytest.raises(BadInput, match=f"at most {bundle_format.MAX_RECIPIENTS} keys"):
        pack(src, keys_dir, tmp_path / "many.evb", targets=["3.11"], recipients=many)
    assert not (tmp_path / "many.evb").exists()


def _entry(kid: bytes | None = None) -> list[bytes]:
    return [kid or nacl.utils.random(keys.KEY_ID_LEN), nacl.utils.random(bundle_format.SEALED_KEY_LEN)]


@pytest.mark.parametrize("recipients, message", [
    ([_entry() for _ in range(bundle_format.MAX_RECIPIENTS)], "sealed to 17 keys"),
    ([_entry() for _ in range(600)], "sealed to 601 keys"),  # near the 64 KiB header cap
    ({"not": "a list"}, "must be a list"),
    ([[b"short", bytes(80)]], "not \\[key id"),
    ([[bytes(8), bytes(79)]], "not \\[key id"),
    ([[bytes(8), bytes(80), b"extra"]], "not \\[key id"),
    (["flat"], "not \\[key id"),
    ([[1, 2]], "not \\[key id"),
    ([[bytes(8), bytes(80)], [bytes(8), bytes(80)]], "twice"),
])
def test_hostile_recipient_lists_are_refused_before_any_is_tried(make_bundle, keys_dir: Path, recipients,
                                                                 message: str) -> None:
    data = make_bundle(SCRIPT).read_bytes()
    hostile = resign(data, keys_dir, lambda h, p: h.update(recipients=recipients))
    with pytest.raises(BadInput, match=message):
        open_bundle(hostile, keys.load_device(keys_dir), max_size=MAX)


def test_a_recipient_naming_the_prefix_key_again_is_refused(make_bundle, keys_dir: Path) -> None:
    data = make_bundle(SCRIPT).read_bytes()
    fleet_id = bundle_format.split(data, MAX).seal_key_id
    hostile = resign(data, keys_dir, lambda h, p: h.update(recipients=[_entry(fleet_id)]))
    with pytest.raises(BadInput, match="twice"):
        open_bundle(hostile, keys.load_device(keys_dir), max_size=MAX)


def test_a_recipient_entry_that_does_not_open_is_a_decrypt_error(make_bundle, keys_dir: Path,
                                                                 replay_dir: Path) -> None:
    data = make_bundle(SCRIPT).read_bytes()
    replay = keys.load_device(replay_dir)
    forged = resign(data, keys_dir, lambda h, p: h.update(recipients=[_entry(next(iter(replay.decrypt)))]))
    assert open_bundle(forged, keys.load_device(keys_dir), max_size=MAX).name == "test"
    with pytest.raises(DecryptError, match="does not decrypt"):
        open_bundle(forged, replay, max_size=MAX)


def test_generate_recipient_pins_the_fleets_verify_key_and_refuses_to_overwrite(keys_dir: Path,
                                                                                tmp_path: Path) -> None:
    ids = keys.generate_recipient(tmp_path, keys_dir)
    ring = keys.load_device(tmp_path)
    assert list(ring.verify) == list(keys.load_device(keys_dir).verify)
    assert [k.hex() for k in ring.decrypt] == [ids["seal_key_id"]]
    assert not (tmp_path / keys.SIGNING_FILE).exists()
    assert (tmp_path / keys.OPEN_FILE).stat().st_mode & 0o077 == 0
    with pytest.raises(keys.KeysExist):
        keys.generate_recipient(tmp_path, keys_dir)
