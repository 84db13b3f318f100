"""``enum`` for scripts. Enumerations defined with a class statement work as usual; the functional
form (``Enum("Color", names)``) accepts only plain member names, because any other name
(``__del__``, ``__getattr__``...) would become a hook that runs code at surprising times. The
names are copied once, as exact strings, and the copy is both checked and used."""
from __future__ import annotations

import enum
from typing import Any

from stdlib_slim.names import plain_str


def _plain_names(names: Any) -> list[tuple[str, Any]] | list[str]:
    if isinstance(names, str):
        items: list = plain_str(names, "enum names").replace(",", " ").split()
    elif isinstance(names, dict):
        items = [(plain_str(k, "enum member name"), v) for k, v in list(names.items())]
    else:
        items = []
        for item in list(names):
            if isinstance(item, str):
                items.append(plain_str(item, "enum member name"))
            else:
                name, value = tuple(item)
                items.append((plain_str(name, "enum member name"), value))
    for item in items:
        name = item if isinstance(item, str) else item[0]
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"invalid enum member name {name!r}")
    return items


class _ScriptEnumType(enum.EnumType):
    def __call__(cls, value: Any, names: Any = None, *args: Any, **kwargs: Any) -> Any:
        if names is None:
            return super().__call__(value, *args, **kwargs)
        return super().__call__(value, _plain_names(names), *args, **kwargs)


class Enum(enum.Enum, metaclass=_ScriptEnumType):
    """``enum.Enum``."""


class IntEnum(int, enum.ReprEnum, metaclass=_ScriptEnumType):
    """``enum.IntEnum``."""


class StrEnum(str, enum.ReprEnum, metaclass=_ScriptEnumType):
    """``enum.StrEnum``."""

    _generate_next_value_ = staticmethod(enum.StrEnum._generate_next_value_)


class Flag(enum.Flag, metaclass=_ScriptEnumType):
    """``enum.Flag``."""


class IntFlag(int, enum.ReprEnum, enum.Flag, boundary=enum.KEEP, metaclass=_ScriptEnumType):
    """``enum.IntFlag``."""


_MEMBERS = {"Enum": Enum, "IntEnum": IntEnum, "StrEnum": StrEnum, "Flag": Flag, "IntFlag": IntFlag,
            "auto": enum.auto, "unique": enum.unique}


def build(env: Any) -> dict[str, Any]:
    return dict(_MEMBERS)
