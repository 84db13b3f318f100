"""``typing`` for scripts: what annotations use. ``NamedTuple`` checks its field names like
attribute access (the generated class's ``__match_args__`` is built from them); ``get_type_hints``
and ``ForwardRef`` are left out because they evaluate strings with ``eval``."""
from __future__ import annotations

import typing
from typing import Any

from stdlib_slim.names import check_field_names

_PLAIN = (
    "TYPE_CHECKING", "Annotated", "Any", "AsyncIterator", "Awaitable", "Callable", "ClassVar",
    "Collection", "Container", "Coroutine", "Counter", "DefaultDict", "Deque", "Dict", "Final",
    "FrozenSet", "Generator", "Generic", "Hashable", "Iterable", "Iterator", "List", "Literal",
    "Mapping", "MutableMapping", "MutableSequence", "MutableSet", "NoReturn", "Optional", "OrderedDict",
    "Protocol", "Sequence", "Set", "Sized", "SupportsFloat", "SupportsIndex", "SupportsInt", "Tuple",
    "Type", "TypeVar", "TypedDict", "Union", "cast", "final", "overload", "runtime_checkable", "Self",
    "Never", "LiteralString",
)


class _CheckedNamedTupleMeta(type):
    def __new__(cls, typename: str, bases: tuple, ns: dict) -> type:
        check_field_names(list(ns.get("__annotations__", {})), "NamedTuple")
        bases = tuple(typing._NamedTuple if b is _Base else b for b in bases)  # type: ignore[attr-defined]
        return typing.NamedTupleMeta.__new__(typing.NamedTupleMeta, typename, bases, ns)  # type: ignore[attr-defined]


_Base = type.__new__(_CheckedNamedTupleMeta, "NamedTuple", (), {})


def NamedTuple(typename: str, fields: Any = None, /, **kwargs: Any) -> type:  # noqa: N802 - typing's name
    """``typing.NamedTuple`` with field names checked like attribute access."""
    if fields is None:
        check_field_names(list(kwargs), "NamedTuple")
        return typing.NamedTuple(typename, **kwargs)
    fields = [tuple(f) for f in fields]
    names = check_field_names([f[0] for f in fields], "NamedTuple")
    return typing.NamedTuple(typename, [(n, f[1]) for n, f in zip(names, fields, strict=True)])


NamedTuple.__mro_entries__ = lambda bases: (_Base,)  # type: ignore[attr-defined]


def build(env: Any) -> dict[str, Any]:
    members = {name: getattr(typing, name) for name in _PLAIN if hasattr(typing, name)}
    members["NamedTuple"] = NamedTuple
    return members
