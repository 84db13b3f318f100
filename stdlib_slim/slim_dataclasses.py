"""``dataclasses`` for scripts. ``dataclass`` generates methods from source text built with the
field names, so field names must be plain identifiers (a crafted ``__annotations__`` key would
otherwise be code). ``make_dataclass`` (arbitrary class namespaces) is left out."""
from __future__ import annotations

import dataclasses
import keyword
from typing import Any

_PLAIN = ("field", "fields", "asdict", "astuple", "replace", "is_dataclass", "FrozenInstanceError",
          "InitVar", "KW_ONLY", "MISSING")


def _check_fields(cls: Any) -> None:
    annotations = cls.__dict__.get("__annotations__", {})
    for name in annotations:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
                or name.startswith("__"):
            raise TypeError(f"invalid dataclass field name {name!r}")


def dataclass(cls: Any = None, /, **kwargs: Any) -> Any:
    """``dataclasses.dataclass``, refusing field names that are not plain identifiers."""

    def wrap(c: Any) -> Any:
        _check_fields(c)
        return dataclasses.dataclass(c, **kwargs)

    return wrap if cls is None else wrap(cls)


def build(env: Any) -> dict[str, Any]:
    members = {name: getattr(dataclasses, name) for name in _PLAIN if hasattr(dataclasses, name)}
    members["dataclass"] = dataclass
    return members
