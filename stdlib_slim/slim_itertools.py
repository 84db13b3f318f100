"""``itertools`` for scripts. The infinite and combinatorial producers (``count``, ``cycle``,
``repeat``, ``product``, ``permutations``, ``combinations``...) are wrapped so that each item
passes through the interpreter loop: ``sum(itertools.count())`` then stops at the deadline
instead of spinning forever inside one C call that no timeout can interrupt."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

_PASS_THROUGH = ("accumulate", "chain", "compress", "dropwhile", "filterfalse", "groupby", "islice",
                 "pairwise", "starmap", "takewhile", "tee", "zip_longest", "batched")
_PRODUCERS = ("count", "cycle", "repeat", "product", "permutations", "combinations",
              "combinations_with_replacement")


def interruptible(it: Any) -> Iterator:
    """Yield from ``it`` one item at a time through a Python frame (a deadline can stop it)."""
    for item in it:  # noqa: UP028 - each step must pass through the interpreter loop
        yield item


def _wrap(producer: Callable[..., Any]) -> Callable[..., Iterator]:
    def wrapped(*args: Any, **kwargs: Any) -> Iterator:
        return interruptible(producer(*args, **kwargs))

    wrapped.__name__ = wrapped.__qualname__ = producer.__name__
    wrapped.__doc__ = producer.__doc__
    return wrapped


_WRAPPED = {name: _wrap(getattr(itertools, name)) for name in _PRODUCERS}


def build(env: Any) -> dict[str, Any]:
    members = {name: getattr(itertools, name) for name in _PASS_THROUGH if hasattr(itertools, name)}
    members.update(_WRAPPED)
    return members
