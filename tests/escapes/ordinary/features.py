"""Ordinary algorithm-engineer code: must pack, load and run unchanged in the sandbox."""

import bisect
import collections
import enum
import functools
import heapq
import itertools
import json
import re
import statistics
import typing
from collections import Counter, namedtuple
from dataclasses import dataclass, field

from pkg import scoring
from pkg.util import clamp

Pair = namedtuple("Pair", "key value")


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class FeatureError(ValueError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name


class Window:
    """A fixed-size window with the usual protocol methods."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[float] = []
        self.pushes = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.items!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Window) and self.items == other.items

    def __lt__(self, other: "Window") -> bool:
        return sum(self.items) < sum(other.items)

    def __hash__(self) -> int:
        return hash(tuple(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> typing.Iterator[float]:
        return iter(self.items)

    def __getitem__(self, i: int) -> float:
        return self.items[i]

    def __contains__(self, x: float) -> bool:
        return x in self.items

    def __enter__(self) -> "Window":
        return self

    def __exit__(self, *exc: object) -> None:
        self.items.clear()

    def push(self, x: float) -> "Window":
        self.items.append(x)
        self.pushes += 1
        if len(self.items) > self.size:
            self.items.pop(0)
        return self


class TimedWindow(Window):
    def __init__(self, size: int, horizon: int) -> None:
        super().__init__(size)
        self.horizon = horizon


@dataclass(order=True)
class Item:
    score: float
    name: str = field(compare=False)
    tags: list[str] = field(default_factory=list, compare=False)


@dataclass(frozen=True)
class Config:
    alpha: float = 0.5
    names: tuple[str, ...] = ()


@functools.lru_cache(maxsize=128)
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def make_counter():
    count = 0

    def bump() -> int:
        nonlocal count
        count += 1
        return count

    return bump


def chunks(xs, n):
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


async def fetch(x):
    return x * 2


async def pipeline(xs):
    out = []
    for x in xs:
        out.append(await fetch(x))
    return out


def drive(coro):
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("coroutine did not finish")


def describe(shape):
    match shape:
        case {"kind": "circle", "r": r}:
            return f"circle {r}"
        case Pair(key, value) if key == "k":
            return f"pair {value}"
        case [first, *rest]:
            return f"list {first} +{len(rest)}"
        case Color.RED:
            return "red"
        case _:
            return "other"


def entry(inputs: dict) -> dict:
    xs = inputs["xs"]
    w = TimedWindow(3, horizon=10)
    for x in xs:
        w.push(x)
    w.pushes += 1
    items = sorted(Item(float(x), f"i{x}") for x in xs)
    heap = list(xs)
    heapq.heapify(heap)
    counter = make_counter()
    counter()
    words = re.findall(r"[a-z]+", inputs["text"])
    groups = {k: len(list(g)) for k, g in itertools.groupby(sorted(words))}
    try:
        raise FeatureError("age", "missing")
    except ValueError as exc:
        error = str(exc)
    cfg = Config(alpha=0.25)
    with Window(2) as tmp:
        tmp.push(1.0)
        inside = len(tmp)
    return {
        "window": list(w), "len": len(w), "repr": repr(w), "has": 3 in w, "first": w[0],
        "pushes": w.pushes, "best": items[-1].name, "smallest": heapq.nsmallest(2, heap),
        "pos": bisect.bisect_left(sorted(xs), 3), "fib": fib(30), "counter": counter(),
        "chunks": list(chunks(xs, 2)), "async": drive(pipeline([1, 2])),
        "squares": {x: x * x for x in xs if x % 2}, "json": json.loads(json.dumps({"a": [1, 2]})),
        "mean": statistics.mean(xs), "median": statistics.median(xs), "groups": groups,
        "common": Counter(words).most_common(1), "pair": list(Pair("k", 1)),
        "fmt": "{} {}".format(cfg.alpha, Color.GREEN.name),  # noqa: UP032
        "f": f"{cfg.alpha:.2f}|{Level.HIGH.value}",
        "match": [describe({"kind": "circle", "r": 2}), describe(Pair("k", 5)), describe([1, 2, 3]),
                  describe(Color.RED), describe(None)],
        "error": error, "inside": inside, "after": len(tmp), "hash": hash(w) == hash(tuple(w)),
        "lt": Window(1).push(1) < Window(1).push(2), "eq": Window(1).push(1) == Window(1).push(1),
        "deque": list(collections.deque(xs, maxlen=2)), "score": scoring.score(xs),
        "clamp": clamp(15, 0, 10), "name": __name__,
    }
