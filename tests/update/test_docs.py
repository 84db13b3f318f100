"""docs/ota.md's option table names every ``update`` sub-option, with the text the code holds."""
from __future__ import annotations

import re
from pathlib import Path

from vm.update.config import OPTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "ota.md"


def test_the_option_table_matches_the_code() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|$", DOC.read_text(), flags=re.M))
    assert set(rows) == set(OPTIONS)
    for name, text in OPTIONS.items():
        assert rows[name].replace("`", "") == text, name
