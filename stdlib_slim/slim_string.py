"""``string`` for scripts: the constants, ``capwords`` and ``Template``. A ``Template`` subclass
may not bring its own pattern: ``string`` compiles it with the standard ``re`` engine, which no
deadline can stop. ``Formatter`` is left out (``get_field`` reaches attributes)."""
from __future__ import annotations

import string
from typing import Any

_PLAIN = ("ascii_letters", "ascii_lowercase", "ascii_uppercase", "capwords", "digits", "hexdigits",
          "octdigits", "printable", "punctuation", "whitespace")
_PATTERN_ATTRS = ("pattern", "delimiter", "idpattern", "braceidpattern", "flags")


class Template(string.Template):
    """``string.Template``; subclasses keep the standard pattern."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        for attr in _PATTERN_ATTRS:
            if attr in cls.__dict__:
                raise TypeError(f"a Template subclass cannot set {attr!r} in a script")
        super().__init_subclass__(**kwargs)


def build(env: Any) -> dict[str, Any]:
    members = {name: getattr(string, name) for name in _PLAIN}
    members["Template"] = Template
    return members
