"""``collections`` for scripts. ``namedtuple`` builds ``__match_args__`` (which class patterns read
attributes by) from its field names, so field names obey the attribute rules."""
from __future__ import annotations

import collections
from typing import Any

from stdlib_slim.names import check_field_names

_PLAIN = ("ChainMap", "Counter", "OrderedDict", "UserDict", "UserList", "UserString", "defaultdict", "deque")


def namedtuple(typename: str, field_names: Any, **kwargs: Any) -> type:
    """``collections.namedtuple`` with field names checked like attribute access."""
    if isinstance(field_names, str):
        field_names = field_names.replace(",", " ").split()
    fields = check_field_names(list(field_names), "namedtuple")
    return collections.namedtuple(typename, fields, **kwargs)


def build(env: Any) -> dict[str, Any]:
    members = {name: getattr(collections, name) for name in _PLAIN}
    members["namedtuple"] = namedtuple
    return members
