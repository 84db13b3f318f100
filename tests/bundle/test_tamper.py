"""A tampered, truncated, misaddressed or replayed bundle is refused with the right error code,
never a crash. Region by region, as laid out in docs/bundle-format.md."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vm.bundle import format as bf
from vm.bundle.keys import load_device
from vm.bundle.loader import open_bundle
from vm.errors import (
    BadInput,
    DecryptError,
    Downgrade,
    EdgeError,
    IncompatibleError,
    SignatureError,
)
from vm.host.runtime import Runtime

SCRIPT = {"features.py": "def entry(inputs):\n    return {'ok': inputs.get('x', 0) + 1}\n"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> bytes:
    from conftest import BundleMaker

    return BundleMaker(tmp_path_factory.mktemp("tamper"), keys_dir)(SCRIPT).read_bytes()


def regions(data: bytes) -> dict[str, tuple[int, int]]:
    _, _, _, _, _, hlen, clen = bf.PREFIX.unpack_from(data)
    h0 = bf.PREFIX_LEN
    c0 = h0 + hlen
    s0 = c0 + clen
    return {"magic": (0, 8), "version": (8, 10), "flags": (10, 12), "sign_key_id": (12, 20),
            "seal_key_id": (20, 28), "header_len": (28, 32), "ciphertext_len": (32, 40),
            "header": (h0, c0), "ciphertext": (c0, s0), "signature": (s0, s0 + bf.SIG_LEN)}


EXPECTED = {
    "magic": BadInput, "version": IncompatibleError, "flags": IncompatibleError,
    "sign_key_id": SignatureError, "seal_key_id": SignatureError, "header_len": BadInput,
    "ciphertext_len": BadInput, "header": SignatureError, "ciphertext": SignatureError,
    "signature": SignatureError,
}


def test_intact_bundle_opens(bundle: bytes, device) -> None:
    assert open_bundle(bundle, device, max_size=1 << 26).name == "test"


@pytest.mark.parametrize("region", list(EXPECTED))
def test_flipped_byte_in_each_region(bundle: bytes, device, region: str) -> None:
    start, end = regions(bundle)[region]
    for pos in sorted({start, (start + end) // 2, end - 1}):
        for mask in (0x01, 0x80):
            data = bytearray(bundle)
            data[pos] ^= mask
            with pytest.raises(EXPECTED[region]):
                open_bundle(bytes(data), device, max_size=1 << 26)


def test_truncation_at_every_region_boundary(bundle: bytes, device) -> None:
    cuts = {0, 1, len(bundle) - 1}
    for start, end in regions(bundle).values():
        cuts |= {start, max(start - 1, 0), start + 1, end - 1, end}
    for cut in sorted(c for c in cuts if c < len(bundle)):
        with pytest.raises(BadInput):
            open_bundle(bundle[:cut], device, max_size=1 << 26)


def test_trailing_bytes_and_oversize(bundle: bytes, device) -> None:
    with pytest.raises(BadInput, match="trailing"):
        open_bundle(bundle + b"\0", device, max_size=1 << 26)
    with pytest.raises(BadInput, match="exceeds"):
        open_bundle(bundle, device, max_size=len(bundle) - 1)


def test_future_format_version_is_incompatible(bundle: bytes, device) -> None:
    data = bytearray(bundle)
    struct.pack_into(">H", data, 8, bf.FORMAT_VERSION + 1)
    with pytest.raises(IncompatibleError, match="format version 2"):
        open_bundle(bytes(data), device, max_size=1 << 26)


def test_wrong_verify_key(bundle: bytes, other_keys_dir: Path) -> None:
    with pytest.raises(SignatureError, match="does not pin"):
        open_bundle(bundle, load_device(other_keys_dir), max_size=1 << 26)


def test_wrong_verify_key_under_the_right_id_fails_the_signature(bundle: bytes, keys_dir: Path,
                                                                 other_keys_dir: Path) -> None:
    # Forge: an attacker re-signs with their own key but keeps the victim's key id in the prefix.
    import nacl.signing

    from vm.bundle.keys import load_server

    attacker = load_server(other_keys_dir).signing
    body = bundle[: -bf.SIG_LEN]
    forged = body + attacker.sign(body).signature
    with pytest.raises(SignatureError, match="does not verify"):
        open_bundle(forged, load_device(keys_dir), max_size=1 << 26)
    assert isinstance(attacker, nacl.signing.SigningKey)


def test_wrong_decrypt_key(bundle: bytes, keys_dir: Path, other_keys_dir: Path) -> None:
    # The device pins the right verify key but holds another decrypt key.
    own, other = load_device(keys_dir), load_device(other_keys_dir)
    from vm.bundle.keys import DeviceKeys

    mixed = DeviceKeys(verify=own.verify, decrypt=other.decrypt)
    with pytest.raises(DecryptError, match="does not hold"):
        open_bundle(bundle, mixed, max_size=1 << 26)
    # Same key id, wrong secret: the sealed box does not open.
    swapped = DeviceKeys(verify=own.verify, decrypt={next(iter(own.decrypt)): next(iter(other.decrypt.values()))})
    with pytest.raises(DecryptError, match="does not decrypt"):
        open_bundle(bundle, swapped, max_size=1 << 26)


@pytest.mark.parametrize("data", [b"", b"\x89", b"\x89EVB", b"hello world" * 10, b"\0" * 100])
def test_garbage_is_bad_input(data: bytes, device) -> None:
    with pytest.raises(BadInput):
        open_bundle(data, device, max_size=1 << 26)


def test_garbage_behind_the_magic_is_an_unknown_format(device) -> None:
    with pytest.raises(IncompatibleError, match="format version"):
        open_bundle(bf.MAGIC * 10, device, max_size=1 << 26)


def test_not_bytes_is_bad_input(device) -> None:
    with pytest.raises(BadInput):
        open_bundle("a string", device, max_size=1 << 26)  # type: ignore[arg-type]


def test_older_version_than_loaded_is_refused(make_bundle, keys_dir: Path) -> None:
    new = make_bundle(SCRIPT, version="2.0.0")
    old = make_bundle(SCRIPT, version="1.9.9")
    with Runtime({"keys": keys_dir}) as rt:
        rt.load(new)
        with pytest.raises(Downgrade, match="older"):
            rt.load(old)
        assert rt.bundles()[0]["version"] == "2.0.0"
        assert rt.infer("s", "b", {"x": 1}) == {"ok": 2}
        rt.load(old, allow_downgrade=True)
        assert rt.bundles()[0]["version"] == "1.9.9"


def test_every_refusal_is_an_edge_error_with_a_stable_code(bundle: bytes, device) -> None:
    for region, (start, _end) in regions(bundle).items():
        data = bytearray(bundle)
        data[start] ^= 0xFF
        with pytest.raises(EdgeError) as info:
            open_bundle(bytes(data), device, max_size=1 << 26)
        assert info.value.code == EXPECTED[region].code, region
