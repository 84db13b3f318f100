"""``re`` for scripts: the ``regex`` engine in its ``re``-compatible mode, with every match bounded
by the calling script's deadline (``regex``'s ``timeout``), so a catastrophic pattern such as
``(a|aa)+$`` fails with the call's Timeout instead of holding the interpreter for minutes."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import regex

from vm.guard.context import ScriptTimeout

_FLAGS = ("A", "ASCII", "I", "IGNORECASE", "M", "MULTILINE", "S", "DOTALL", "X", "VERBOSE", "U", "UNICODE")
MAX_PATTERN = 10_000


def _plain(pattern: Any) -> str | bytes:
    # An exact copy: a str subclass would run script code inside the engine and the cache.
    return "".join((pattern,)) if isinstance(pattern, str) else b"".join((pattern,))


def build(env: Any) -> dict[str, Any]:
    def remaining(concurrent: bool) -> float:
        # Stop a little before the call's deadline, so that the engine stops itself first. Holding
        # the GIL (a mutable buffer), it checks its clock coarsely and overshoots by up to ~2x.
        left = env.regex_timeout_s() - 0.005
        return max(left if concurrent else left * 0.45, 0.001)

    def bounded(method: Any, string: Any, *args: Any, repl: Any = None) -> Any:
        # Matching on an immutable string releases the GIL, so the rest of the runtime keeps going.
        concurrent = type(string) in (str, bytes)
        lead = () if repl is None else (repl,)
        try:
            return method(*lead, string, *args, timeout=remaining(concurrent), concurrent=concurrent)
        except TimeoutError:
            raise ScriptTimeout("a regular expression ran past the call's deadline") from None

    class Match:
        """A match; ``re`` is the deadline-bound pattern, never the engine's own."""

        __slots__ = ("_m", "_re")

        def __init__(self, m: Any, pattern: Any) -> None:
            self._m = m
            self._re = pattern

        re = property(lambda self: self._re)
        string = property(lambda self: self._m.string)
        pos = property(lambda self: self._m.pos)
        endpos = property(lambda self: self._m.endpos)
        lastindex = property(lambda self: self._m.lastindex)
        lastgroup = property(lambda self: self._m.lastgroup)

        def group(self, *groups: Any) -> Any:
            return self._m.group(*groups)

        def groups(self, default: Any = None) -> tuple:
            return self._m.groups(default)

        def groupdict(self, default: Any = None) -> dict:
            return self._m.groupdict(default)

        def start(self, group: Any = 0) -> int:
            return self._m.start(group)

        def end(self, group: Any = 0) -> int:
            return self._m.end(group)

        def span(self, group: Any = 0) -> tuple:
            return self._m.span(group)

        def expand(self, template: Any) -> Any:
            return self._m.expand(_plain(template))

        def __getitem__(self, group: Any) -> Any:
            return self._m[group]

        def __repr__(self) -> str:
            return repr(self._m)

    class Pattern:
        """A compiled pattern whose every operation carries the script's deadline."""

        __slots__ = ("_p",)

        def __init__(self, compiled: Any) -> None:
            self._p = compiled

        pattern = property(lambda self: self._p.pattern)
        flags = property(lambda self: self._p.flags)
        groups = property(lambda self: self._p.groups)
        groupindex = property(lambda self: dict(self._p.groupindex))

        def _wrap(self, m: Any) -> Match | None:
            return None if m is None else Match(m, self)

        def _repl(self, repl: Any) -> Any:
            if callable(repl):
                return lambda m: repl(Match(m, self))
            return _plain(repl)

        def match(self, string: Any, pos: int = 0, endpos: int | None = None) -> Match | None:
            return self._wrap(bounded(self._p.match, string, pos, endpos))

        def fullmatch(self, string: Any, pos: int = 0, endpos: int | None = None) -> Match | None:
            return self._wrap(bounded(self._p.fullmatch, string, pos, endpos))

        def search(self, string: Any, pos: int = 0, endpos: int | None = None) -> Match | None:
            return self._wrap(bounded(self._p.search, string, pos, endpos))

        def findall(self, string: Any, pos: int = 0, endpos: int | None = None) -> list:
            return bounded(self._p.findall, string, pos, endpos)

        def finditer(self, string: Any, pos: int = 0, endpos: int | None = None) -> Iterator[Match]:
            matches = bounded(self._p.finditer, string, pos, endpos)
            try:
                for m in matches:  # noqa: UP028 - each match is wrapped
                    yield Match(m, self)
            except TimeoutError:
                raise ScriptTimeout("a regular expression ran past the call's deadline") from None

        def split(self, string: Any, maxsplit: int = 0) -> list:
            return bounded(self._p.split, string, maxsplit)

        def sub(self, repl: Any, string: Any, count: int = 0) -> Any:
            return bounded(self._p.sub, string, count, repl=self._repl(repl))

        def subn(self, repl: Any, string: Any, count: int = 0) -> tuple:
            return bounded(self._p.subn, string, count, repl=self._repl(repl))

        def __repr__(self) -> str:
            return f"re.compile({self._p.pattern!r})"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Pattern) and self._p == other._p

        def __hash__(self) -> int:
            return hash(self._p)

    cache: dict[tuple, Pattern] = {}

    def compile(pattern: Any, flags: int = 0) -> Pattern:  # noqa: A001 - the re API's name
        if isinstance(pattern, Pattern):
            return pattern
        if not isinstance(pattern, (str, bytes)):
            raise TypeError("first argument must be a string or compiled pattern")
        pattern = _plain(pattern)
        if len(pattern) > MAX_PATTERN:
            raise ValueError(f"pattern longer than {MAX_PATTERN} characters")
        key = (type(pattern), pattern, int(flags))
        compiled = cache.get(key)
        if compiled is None:
            compiled = Pattern(regex.compile(pattern, int(flags) | regex.VERSION0))
            if len(cache) < 512:
                cache[key] = compiled
        return compiled

    def match(pattern, string, flags=0):
        return compile(pattern, flags).match(string)

    def fullmatch(pattern, string, flags=0):
        return compile(pattern, flags).fullmatch(string)

    def search(pattern, string, flags=0):
        return compile(pattern, flags).search(string)

    def findall(pattern, string, flags=0):
        return compile(pattern, flags).findall(string)

    def finditer(pattern, string, flags=0):
        return compile(pattern, flags).finditer(string)

    def split(pattern, string, maxsplit=0, flags=0):
        return compile(pattern, flags).split(string, maxsplit)

    def sub(pattern, repl, string, count=0, flags=0):
        return compile(pattern, flags).sub(repl, string, count)

    def subn(pattern, repl, string, count=0, flags=0):
        return compile(pattern, flags).subn(repl, string, count)

    members: dict[str, Any] = {
        "compile": compile, "match": match, "fullmatch": fullmatch, "search": search,
        "findall": findall, "finditer": finditer, "split": split, "sub": sub, "subn": subn,
        "escape": regex.escape, "error": regex.error, "Pattern": Pattern, "Match": Match,
    }
    # plain ints: regex's flag enum caches every combination made from it for the whole process (a
    # script's int subclass would become another bundle's re.I | re.M)
    members.update({f: int(getattr(regex, f)) for f in _FLAGS})
    return members
