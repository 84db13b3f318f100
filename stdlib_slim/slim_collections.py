"""``collections`` for scripts. ``namedtuple`` builds ``__match_args__`` (which class patterns read
attributes by) from its field names, so field names obey the attribute rules."""
from __future__ import annotations

import collections
from typing import Any

from stdlib_slim.names import check_field_names

_PLAIN = ("ChainMap", "Counter", "OrderedDict", "UserDict", "UserList", "UserString", "defaultdict", "deque")


def build(env: Any) -> dict[str, Any]:
    def namedtuple(typename: str, field_names: Any, **kwargs: Any) -> type:
        """``collections.namedtuple`` with field names checked like attribute access; the class is
        the bundle's own (its ``_replace``/``_asdict``/``_fields`` are usable)."""
        if isinstance(field_names, str):
            field_names = field_names.replace(",", " ").split()
        fields = check_field_names(list(field_names), "namedtuple")
        return env.own_class(collections.namedtuple(typename, fields, **kwargs))

    members = {name: getattr(collections, name) for name in _PLAIN}
    members["namedtuple"] = namedtuple
    return members
