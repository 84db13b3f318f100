"""``enum`` for scripts. Enumerations defined with a class statement work as usual; the functional
form (``Enum("Color", names)``) is allowed only with plain member names, because any other name
(``__del__``, ``__getattr__``...) would become a hook that runs code at surprising times."""
from __future__ import annotations

import enum
from typing import Any


def _check_names(names: Any) -> None:
    if isinstance(names, str):
        items = names.replace(",", " ").split()
    elif isinstance(names, dict):
        items = list(names)
    else:
        items = [n if isinstance(n, str) else n[0] for n in names]
    for name in items:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"invalid enum member name {name!r}")


class _ScriptEnumType(enum.EnumType):
    def __call__(cls, value: Any, names: Any = None, *args: Any, **kwargs: Any) -> Any:
        if names is None:
            return super().__call__(value, *args, **kwargs)
        _check_names(names)
        return super().__call__(value, names, *args, **kwargs)


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
