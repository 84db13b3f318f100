"""``re`` for scripts: the ``regex`` engine in its ``re``-compatible mode, with every match bounded
by the calling script's deadline (``regex``'s ``timeout``), so a catastrophic pattern such as
``(a|aa)+$`` fails with the call's Timeout instead of holding the interpreter for minutes."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import regex

from vm.watchdog import ScriptTimeout

_FLAGS = ("A", "ASCII", "I", "IGNORECASE", "M", "MULTILINE", "S", "DOTALL", "X", "VERBOSE", "U", "UNICODE")
MAX_PATTERN = 10_000


def build(env: Any) -> dict[str, Any]:
    remaining = env.regex_timeout_s

    def bounded(method: Any, *args: Any) -> Any:
        try:
            return method(*args, timeout=remaining())
        except TimeoutError:
            raise ScriptTimeout("a regular expression ran past the call's deadline") from None

    class Pattern:
        """A compiled pattern whose every operation carries the script's deadline."""

        __slots__ = ("_p",)

        def __init__(self, compiled: Any) -> None:
            self._p = compiled

        pattern = property(lambda self: self._p.pattern)
        flags = property(lambda self: self._p.flags)
        groups = property(lambda self: self._p.groups)
        groupindex = property(lambda self: dict(self._p.groupindex))

        def match(self, string: Any, pos: int = 0, endpos: int | None = None) -> Any:
            return bounded(self._p.match, string, pos, endpos)

        def fullmatch(self, string: Any, pos: int = 0, endpos: int | None = None) -> Any:
            return bounded(self._p.fullmatch, string, pos, endpos)

        def search(self, string: Any, pos: int = 0, endpos: int | None = None) -> Any:
            return bounded(self._p.search, string, pos, endpos)

        def findall(self, string: Any, pos: int = 0, endpos: int | None = None) -> list:
            return bounded(self._p.findall, string, pos, endpos)

        def finditer(self, string: Any, pos: int = 0, endpos: int | None = None) -> Iterator:
            matches = bounded(self._p.finditer, string, pos, endpos)
            try:
                yield from matches
            except TimeoutError:
                raise ScriptTimeout("a regular expression ran past the call's deadline") from None

        def split(self, string: Any, maxsplit: int = 0) -> list:
            return bounded(self._p.split, string, maxsplit)

        def sub(self, repl: Any, string: Any, count: int = 0) -> Any:
            return bounded(self._p.sub, repl, string, count)

        def subn(self, repl: Any, string: Any, count: int = 0) -> tuple:
            return bounded(self._p.subn, repl, string, count)

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
        if len(pattern) > MAX_PATTERN:
            raise ValueError(f"pattern longer than {MAX_PATTERN} characters")
        key = (type(pattern), pattern, flags)
        compiled = cache.get(key)
        if compiled is None:
            compiled = Pattern(regex.compile(pattern, flags | regex.VERSION0))
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
        "escape": regex.escape, "error": regex.error, "Pattern": Pattern,
    }
    members.update({f: getattr(regex, f) for f in _FLAGS})
    return members
