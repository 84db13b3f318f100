"""``collections`` for scripts. ``namedtuple`` builds ``__match_args__`` (which class patterns read
attributes by) from its field names, so field names obey the attribute rules. ``OrderedDict`` is
the standard library's pure-Python implementation: the C one crashes the process when a key's
``__eq__``/``__hash__`` mutates the dict during ``pop``, ``popitem``, ``move_to_end``, ``del`` or
``==`` (CPython 3.11-3.13)."""
from __future__ import annotations

import collections
import importlib.util
import sys
from typing import Any

from stdlib_slim.names import check_field_names

_PLAIN = ("ChainMap", "Counter", "UserDict", "UserList", "UserString", "defaultdict", "deque")


def _python_ordered_dict() -> type:
    """``collections.OrderedDict`` as written in Python: a fresh copy of the collections module run
    with its C accelerator hidden (the copy is not registered anywhere)."""
    spec = importlib.util.find_spec("collections")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules["_collections"]  # imported with collections above
    sys.modules["_collections"] = None  # type: ignore[assignment]  # makes its import fail
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules["_collections"] = saved
    return module.OrderedDict


OrderedDict = _python_ordered_dict()


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
    members["OrderedDict"] = OrderedDict
    return members
