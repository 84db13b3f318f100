"""Key files, key ids and the device keyring's accepted forms; no secret in any repr or error."""
from __future__ import annotations

import base64
import json
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
