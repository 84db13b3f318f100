"""Shared fixtures: one key set per test session, and a helper that packs a bundle from
inline sources."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from vm.bundle import keys as keys_mod
from vm.tools.packer import pack


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    keys_mod.generate(d)
    return d


@pytest.fixture(scope="session")
def device(keys_dir: Path) -> keys_mod.DeviceKeys:
    """The device keyring for ``keys_dir``."""
    return keys_mod.load_device(keys_dir)


@pytest.fixture(scope="session")
def other_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("other-keys")
    keys_mod.generate(d)
    return d


class BundleMaker:
    """Write sources + bundle.json into a fresh directory and pack them."""

    def __init__(self, root: Path, keys_dir: Path) -> None:
        self.root = root
        self.keys_dir = keys_dir
        self.count = 0

    def __call__(self, files: dict[str, str], *, name: str = "test", version: str = "1.0.0",
                 system: str = "s", entries: dict[str, str] | None = None, targets: list[str] | None = None,
                 skip_policy: bool = False, keys_dir: Path | None = None, extra: dict | None = None,
                 binary: dict[str, bytes] | None = None) -> Path:
        self.count += 1
        src = self.root / f"src{self.count}"
        src.mkdir(parents=True)
        for rel, text in files.items():
            path = src / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        for rel, data in (binary or {}).items():
            (src / rel).write_bytes(data)
        manifest = {"name": name, "version": version, "system": system,
                    "entries": entries or {"b": "features:entry"}, **(extra or {})}
        (src / "bundle.json").write_text(json.dumps(manifest))
        out = self.root / f"b{self.count}.evb"
        pack(src, keys_dir or self.keys_dir, out, targets=targets or ["3.11"], skip_source_policy=skip_policy)
        return out


@pytest.fixture
def make_bundle(tmp_path: Path, keys_dir: Path) -> BundleMaker:
    return BundleMaker(tmp_path, keys_dir)
