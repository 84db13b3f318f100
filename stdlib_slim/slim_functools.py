"""``functools`` for scripts. ``update_wrapper``/``wraps`` copy only the standard attributes: a
caller-chosen list would name dunders (``updated=("__globals__",)`` merges another module's
globals into the script's). ``singledispatch`` registrations name their class explicitly:
registering by annotation evaluates string annotations with ``eval``."""
from __future__ import annotations

import functools
from typing import Any

_PLAIN = ("cache", "cached_property", "cmp_to_key", "lru_cache", "partial", "partialmethod", "reduce",
          "total_ordering")


def update_wrapper(wrapper: Any, wrapped: Any) -> Any:
    """``functools.update_wrapper`` with the standard attributes only."""
    return functools.update_wrapper(wrapper, wrapped)


def wraps(wrapped: Any) -> Any:
    """``functools.wraps`` with the standard attributes only."""
    return functools.wraps(wrapped)


def singledispatch(func: Any) -> Any:
    """``functools.singledispatch``; ``register`` needs the class: ``@f.register(int)``."""
    dispatcher = functools.singledispatch(func)
    register = dispatcher.register

    def checked_register(cls: Any, func: Any = None) -> Any:
        if not isinstance(cls, type):
            raise TypeError("register the implementation with its class: @f.register(SomeClass)")
        return register(cls, func)

    dispatcher.register = checked_register
    return dispatcher


def build(env: Any) -> dict[str, Any]:
    members = {name: getattr(functools, name) for name in _PLAIN}
    members.update(update_wrapper=update_wrapper, wraps=wraps, singledispatch=singledispatch)
    return members
