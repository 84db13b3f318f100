"""``itertools`` for scripts. The infinite and combinatorial producers (``count``, ``cycle``,
``repeat``, ``product``, ``permutations``, ``combinations``...) and ``chain`` (whose length is the
sum of its inputs': a list of a million references to one range is a trillion items) are wrapped so
that each item passes through the interpreter loop: ``sum(itertools.count())`` then stops at the
deadline instead of spinning forever inside one C call that no timeout can interrupt."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

_PASS_THROUGH = ("accumulate", "compress", "dropwhile", "filterfalse", "groupby", "islice",
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


class _Chain:
    """``itertools.chain`` and ``chain.from_iterable``, one item at a time through the interpreter
    loop. An instance without attributes of its own: a script cannot replace ``from_iterable`` for
    another bundle."""

    __slots__ = ()

    def __call__(self, *iterables: Any) -> Iterator:
        return interruptible(itertools.chain(*iterables))

    @staticmethod
    def from_iterable(iterable: Any) -> Iterator:
        return interruptible(itertools.chain.from_iterable(iterable))


_CHAIN = _Chain()


def build(env: Any) -> dict[str, Any]:
    members = {name: getattr(itertools, name) for name in _PASS_THROUGH if hasattr(itertools, name)}
    members.update(_WRAPPED, chain=_CHAIN)
    return members
