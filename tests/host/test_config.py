"""The typed runtime configuration: defaults, ranges and refusals, and docs/config.md in step with it."""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from vm.errors import BadInput
from vm.host.config import OPTIONS, Config, can_isolate

ROOT = Path(__file__).resolve().parents[2]


def test_defaults(keys_dir: Path) -> None:
    cfg = Config.from_dict({"keys": keys_dir})
    assert cfg.deadline_ms == 50 and cfg.memory_limit == 256 << 20 and cfg.spare_workers == 1
    assert cfg.isolation == ("process" if can_isolate() else "thread")
    assert cfg.parallel == (1 if cfg.isolation == "process" else 2)
    assert Config.from_dict({"keys": keys_dir, "isolation": "thread"}).parallel == 2
    assert Config.from_dict({"keys": keys_dir, "workers": 3}).parallel == 3


@pytest.mark.parametrize("doc, message", [
    ({}, "needs 'keys'"),
    ({"deadline": 5}, "did you mean 'deadline_ms'"),
    ({"isolation": "vm"}, "must be one of 'process', 'thread'"),
    ({"deadline_ms": 0}, "must be a number in"),
    ({"deadline_ms": True}, "must be a number in"),
    ({"workers": "2"}, "must be a number in"),
    ({"allow_downgrade": 1}, "true or false"),
    ({"device_profile": {"threads": 2}}, "unknown key"),
    ({"log": 5}, "callable"),
])
def test_bad_options_are_refused_by_name(keys_dir: Path, doc: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        Config.from_dict({"keys": keys_dir, **doc} if doc else doc)


def test_the_reference_documents_every_option() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \|.*\| ([^|]+) \|$", text, re.M))
    assert set(rows) == {f.name for f in fields(Config)}
    for name, doc in OPTIONS.items():
        assert rows[name].strip() == doc, name
