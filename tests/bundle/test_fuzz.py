"""Property tests: random and mutated bundle bytes never crash the process and always end in a
typed error (or, for an untouched bundle, a successful load)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vm.bundle import format as bf
from vm.bundle.loader import open_bundle
from vm.errors import EdgeError

SCRIPT = {"features.py": "import math\n\ndef entry(inputs):\n    return math.sqrt(inputs['x'])\n"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> bytes:
    from conftest import BundleMaker

    return BundleMaker(tmp_path_factory.mktemp("fuzz"), keys_dir)(SCRIPT).read_bytes()


def _open(data: bytes, device) -> None:
    try:
        open_bundle(data, device, max_size=1 << 22)
    except EdgeError as exc:
        assert isinstance(exc.code, int) and exc.name and str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048))
def test_random_bytes(device, data: bytes) -> None:
    _open(data, device)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=512))
def test_random_bytes_behind_a_valid_magic(device, data: bytes) -> None:
    _open(bf.MAGIC + data, device)
    _open(bf.MAGIC + b"\x00\x01\x00\x00" + data, device)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_bundles(bundle: bytes, device, data: st.DataObject) -> None:
    buf = bytearray(bundle)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buf[pos:pos + data.draw(st.integers(1, 16))]
        elif kind == "truncate":
            del buf[pos:]
    if bytes(buf) == bundle:
        assert open_bundle(bytes(buf), device, max_size=1 << 22).name == "test"
    else:
        with pytest.raises(EdgeError):
            open_bundle(bytes(buf), device, max_size=1 << 22)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 40), st.integers(0, 2 ** 32 - 1))
def test_prefix_fields_with_any_value(bundle: bytes, device, offset: int, value: int) -> None:
    buf = bytearray(bundle)
    buf[offset:offset + 4] = value.to_bytes(4, "big")
    if bytes(buf) == bundle:
        return
    with pytest.raises(EdgeError):
        open_bundle(bytes(buf), device, max_size=1 << 22)
