"""``typing`` for scripts: what annotations use. ``NamedTuple`` checks its field names like
attribute access (the generated class's ``__match_args__`` is built from them); ``get_type_hints``
and ``ForwardRef`` are left out because they evaluate strings with ``eval``.

typing caches every subscription (``List[int]``) for the whole process, keyed by the arguments: a
script object whose ``__eq__`` says it equals ``int`` would be handed to the host and every bundle
as ``List[int]``'s argument (and its methods would run in their threads). Subscriptions with such
arguments bypass the cache (``_guard_caches``)."""
from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from stdlib_slim.names import check_field_names
from vm.guard.context import SANDBOX_MARKER

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


def _script_equality(obj: object) -> bool:
    """True if ``obj``'s ``__eq__`` or ``__hash__`` is script code (runs with a sandbox's builtins)."""
    for cls in type(obj).__mro__:
        for name in ("__eq__", "__hash__"):
            fn = vars(cls).get(name)
            if isinstance(fn, types.FunctionType) and SANDBOX_MARKER in fn.__builtins__:
                return True
    return False


def _has_script_keys(args: Iterable[object]) -> bool:
    pending = list(args)
    while pending:
        item = pending.pop()
        if type(item) in (tuple, list):
            pending.extend(item)
        elif _script_equality(item):
            return True
    return False


def _bypassed_for_script_keys(cached: Callable[..., Any]) -> Callable[..., Any]:
    def lookup(*args: Any, **kwargs: Any) -> Any:
        if _has_script_keys(args) or _has_script_keys(kwargs.values()):
            # typing's wrapper treats a TypeError as "unhashable" and calls the function uncached
            raise TypeError("script-defined equality: not cached")
        return cached(*args, **kwargs)

    lookup.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return lookup


def _guard_caches() -> None:
    """Route typing's subscription caches (the ``lru_cache`` wrappers whose ``cache_clear`` typing
    keeps in ``_cleanups``) through ``_bypassed_for_script_keys``: 3.12+ looks them up in
    ``typing._caches``, 3.11 holds each in the closure of the cached ``__getitem__``."""
    caches = {id(getattr(c, "__self__", None)) for c in typing._cleanups}  # type: ignore[attr-defined]
    shared: dict | None = getattr(typing, "_caches", None)
    if shared is not None:
        for func, cached in list(shared.items()):
            if id(cached) in caches:
                shared[func] = _bypassed_for_script_keys(cached)
        return
    for cls in [v for v in vars(typing).values() if isinstance(v, type)]:
        for attr in vars(cls).values():
            fn = getattr(attr, "__func__", attr)
            code = getattr(fn, "__code__", None)
            if code is not None and "cached" in code.co_freevars:
                cell = fn.__closure__[code.co_freevars.index("cached")]
                if id(cell.cell_contents) in caches:
                    cell.cell_contents = _bypassed_for_script_keys(cell.cell_contents)


_guard_caches()
