"""Checks shared by the wrappers that turn script-chosen strings into names: field names of
dataclasses and named tuples, enum member names."""
from __future__ import annotations

import keyword
from typing import Any

from vm.policy import rules


def plain_str(value: Any, what: str) -> str:
    """An exact ``str`` copy of ``value`` (a ``str`` subclass could answer checks one way and be
    used another); no method of ``value`` runs."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    return "".join((value,))


def check_field_names(names: list[Any], what: str) -> list[str]:
    """Plain identifiers that obey the attribute rules (generated classes read attributes by these
    names, e.g. through ``__match_args__``)."""
    out = []
    for name in names:
        name = plain_str(name, f"{what} field name")
        if not name.isidentifier() or keyword.iskeyword(name):
            raise TypeError(f"invalid {what} field name {name!r}")
        problem = rules.named_attribute_problem(name)
        if problem:
            raise TypeError(f"{what} field name {name!r}: {problem}")
        out.append(name)
    return out
