"""Version strings of bundles and of the runtime: ``"1.2.0"`` compared as ``(1, 2, 0)``."""
from __future__ import annotations

import re

from vm.errors import BadInput

VERSION_RE = re.compile(r"\A\d+(\.\d+){0,3}\Z")


def parse_version(text: str, what: str = "version") -> tuple[int, ...]:
    """``"1.2.0"`` -> ``(1, 2, 0)``; a clear error for anything else."""
    if not isinstance(text, str) or not VERSION_RE.match(text):
        raise BadInput(f"{what} must look like '1.2.0', got {text!r}")
    return tuple(int(p) for p in text.split("."))
