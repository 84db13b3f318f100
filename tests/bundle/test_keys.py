"""Key files, key ids and the device keyring's accepted forms; no secret in any repr or error."""
from __future__ import annotations

import base64
import errno
import json
import os
import stat
from pathlib import Path

import pytest

from vm.bundle import keys
from vm.errors import BadInput, NotFound


def test_ids_are_stable_and_short(tmp_path: Path) -> None:
    ids = keys.generate(tmp_path)
    server = keys.load_server(tmp_path)
    device = keys.load_device(tmp_path)
    assert server.sign_key_id.hex() == ids["sign_key_id"] and len(server.sign_key_id) == 8
    assert server.seal_key_id.hex() == ids["seal_key_id"]
    assert list(device.verify) == [server.sign_key_id]
    assert list(device.decrypt) == [server.seal_key_id]


def test_keyring_forms(tmp_path: Path) -> None:
    keys.generate(tmp_path)
    doc = json.loads((tmp_path / "device.json").read_text())
    forms = [tmp_path, str(tmp_path), tmp_path / "device.json", (tmp_path / "device.json").read_bytes(), doc,
             {"verify": [e["key"] for e in doc["verify"]], "decrypt": [e["key"] for e in doc["decrypt"]]},
             {"verify": base64.b64decode(doc["verify"][0]["key"]),
              "decrypt": base64.b64decode(doc["decrypt"][0]["key"])}]
    expected = keys.load_device(tmp_path)
    for form in forms:
        got = keys.load_device(form)
        assert got.verify.keys() == expected.verify.keys() and got.decrypt.keys() == expected.decrypt.keys()


def test_rotation_several_keys(tmp_path: Path) -> None:
    keys.generate(tmp_path / "old")
    keys.generate(tmp_path / "new")
    old = json.loads((tmp_path / "old" / "device.json").read_text())
    new = json.loads((tmp_path / "new" / "device.json").read_text())
    both = keys.load_device({"verify": old["verify"] + new["verify"], "decrypt": old["decrypt"] + new["decrypt"]})
    assert len(both.verify) == 2 and len(both.decrypt) == 2


@pytest.mark.parametrize("spec, error", [
    ({}, BadInput), ({"verify": ["AAAA"]}, BadInput), ({"verify": "not base64!", "decrypt": []}, BadInput),
    (b"{not json", BadInput), (42, BadInput), ("/nonexistent/keys", NotFound),
])
def test_bad_keyrings(spec: object, error: type) -> None:
    with pytest.raises(error):
        keys.load_device(spec)


def test_no_secret_in_repr_or_errors(tmp_path: Path) -> None:
    keys.generate(tmp_path)
    secret = json.loads((tmp_path / "open.key").read_text())["key"]
    seed = json.loads((tmp_path / "signing.key").read_text())["seed"]
    texts = [repr(keys.load_device(tmp_path)), repr(keys.load_server(tmp_path))]
    truncated = {"verify": [json.loads((tmp_path / "verify.pub").read_text())["key"]], "decrypt": [secret[:-4]]}
    with pytest.raises(BadInput) as info:
        keys.load_device(truncated)
    texts.append(str(info.value))
    for text in texts:
        assert secret not in text and seed not in text and secret[:-4] not in text


def test_wrong_file_kind(tmp_path: Path) -> None:
    keys.generate(tmp_path)
    (tmp_path / "signing.key").write_text((tmp_path / "verify.pub").read_text())
    with pytest.raises(BadInput, match="not a ed25519-signing key"):
        keys.load_server(tmp_path)


def test_a_key_pasted_where_a_path_belongs_is_not_echoed(tmp_path: Path) -> None:
    keys.generate(tmp_path)
    secret = json.loads((tmp_path / "open.key").read_text())["key"]
    with pytest.raises(NotFound) as info:
        keys.load_device(secret)
    assert secret not in str(info.value)


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry of ``d`` (temporary files included): its bytes and mode."""
    return {p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in sorted(d.iterdir())}


def test_existing_keys_are_never_replaced_silently(tmp_path: Path) -> None:
    ids = keys.generate(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(keys.KeysExist) as info:
        keys.generate(tmp_path)
    message = str(info.value)
    assert f"sign key id {ids['sign_key_id']}" in message and f"seal key id {ids['seal_key_id']}" in message
    assert "--force" in message and info.value.code == BadInput.code
    assert info.value.detail == {"files": list(keys.KEY_FILES), "sign_key_ids": [ids["sign_key_id"]],
                                 "seal_key_ids": [ids["seal_key_id"]]}
    assert _snapshot(tmp_path) == before


def test_any_one_key_file_is_enough_to_refuse(tmp_path: Path) -> None:
    ids = keys.generate(tmp_path / "full")
    sign, seal = [ids["sign_key_id"]], [ids["seal_key_id"]]
    held = {keys.SIGNING_FILE: (sign, []), keys.VERIFY_FILE: (sign, []), keys.SEAL_FILE: ([], seal),
            keys.OPEN_FILE: ([], seal), keys.DEVICE_FILE: (sign, seal)}
    for name, (sign_ids, seal_ids) in held.items():
        d = tmp_path / name
        d.mkdir()
        (d / name).write_bytes((tmp_path / "full" / name).read_bytes())
        with pytest.raises(keys.KeysExist, match=f"{name}: ") as info:
            keys.generate(d)
        assert info.value.detail == {"files": [name], "sign_key_ids": sign_ids, "seal_key_ids": seal_ids}
        assert [p.name for p in d.iterdir()] == [name]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / keys.OPEN_FILE).write_text("not a key")
    with pytest.raises(keys.KeysExist, match="no readable key"):
        keys.generate(tmp_path / "bad")


def test_other_files_in_the_directory_are_no_obstacle(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("server keys")
    ids = keys.generate(tmp_path)
    assert ids["replaced"]["files"] == [] and (tmp_path / "README").read_text() == "server keys"


def test_force_replaces_and_reports_the_old_ids(tmp_path: Path) -> None:
    old = keys.generate(tmp_path)
    new = keys.generate(tmp_path, force=True)
    assert new["replaced"] == {"files": list(keys.KEY_FILES), "sign_key_ids": [old["sign_key_id"]],
                               "seal_key_ids": [old["seal_key_id"]]}
    assert new["sign_key_id"] != old["sign_key_id"] and new["seal_key_id"] != old["seal_key_id"]
    assert keys.load_server(tmp_path).sign_key_id.hex() == new["sign_key_id"]
    assert [k.hex() for k in keys.load_device(tmp_path).decrypt] == [new["seal_key_id"]]


def test_force_gives_a_loosened_secret_file_0600_again(tmp_path: Path) -> None:
    keys.generate(tmp_path)
    secret_files = (keys.SIGNING_FILE, keys.OPEN_FILE, keys.DEVICE_FILE)
    for name in secret_files:
        os.chmod(tmp_path / name, 0o644)
    keys.generate(tmp_path, force=True)
    for name in secret_files:
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def test_a_crash_mid_write_leaves_the_old_keys_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys.generate(tmp_path)
    before = _snapshot(tmp_path)
    real_write, writes = os.write, []

    def write_half_then_fail(fd: int, data: bytes) -> int:
        writes.append(fd)
        if len(writes) < 4:  # the fourth key file is the one being written when the disk fills up
            return real_write(fd, data)
        real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "write", write_half_then_fail)
        with pytest.raises(OSError):
            keys.generate(tmp_path, force=True)
    assert _snapshot(tmp_path) == before


def test_each_key_file_is_flushed_before_it_replaces_the_old_one(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    keys.generate(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        m.setattr(os, "replace", replace)
        keys.generate(tmp_path, force=True)
    renames = [e for e in events if e[0] == "replace"]
    assert sorted(Path(e[2]).name for e in renames) == sorted(keys.KEY_FILES)
    for _, src, dst in renames:
        assert events.index(("fsync", src)) < events.index(("replace", src, dst)), src
    assert events[-1] == ("fsync", str(tmp_path))  # the directory, so that the renames are durable too
