"""Circuit breakers per (bundle, entry): stop calling an entry that keeps failing.

States: **closed** (calls flow; consecutive failures are counted) → after ``failures`` consecutive
failures, crashes or timeouts → **open** (new tasks fail fast with ``CircuitOpen`` for ``cooldown_s``)
→ **half-open** (up to ``probes`` tasks are let through as probes; every probe succeeding closes the
breaker, any probe failing opens it again for another cooldown).

A task takes a *permit* when it is submitted (``acquire``) and reports its outcome when it ends
(``record``) or gives the permit back if it never ran (``release``). Outcomes of ordinary permits
taken before the breaker opened do not move an open breaker; only probes decide a half-open one.
A new bundle version resets its breakers. Every state change is logged and kept (bounded) for
``Runtime.metrics()``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vm.errors import BadInput, CircuitOpen

log = logging.getLogger("edgevm.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
NORMAL_PERMIT = 1  # probe permits are 2 + the half-open round they belong to


@dataclass(frozen=True)
class BreakerConfig:
    """``failures`` consecutive failures open the breaker for ``cooldown_s``; ``probes`` successful
    probes in half-open state close it."""

    failures: int = 5
    cooldown_s: float = 30.0
    probes: int = 1

    def __post_init__(self) -> None:
        if self.failures < 1 or self.probes < 1 or self.cooldown_s < 0:
            raise BadInput("breaker needs failures >= 1, probes >= 1 and a cooldown >= 0")


class Breaker:
    """The breaker of one (bundle, entry)."""

    def __init__(self, key: tuple[str, str], version: str, config: BreakerConfig, owner: Breakers) -> None:
        self.key = key
        self.version = version
        self.config = config
        self._owner = owner
        self._lock = threading.Lock()
        self.state = CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.probes_out = 0
        self.probes_ok = 0
        self.opens = 0
        self.round = 0
        self.last_error = ""

    @property
    def name(self) -> str:
        return f"{self.key[0]}:{self.key[1]}"

    def acquire(self) -> int:
        """A permit for one new task, or ``CircuitOpen``."""
        state = self.state
        if state == CLOSED:  # the hot path, no lock: a racing transition is caught by ``allows``
            return NORMAL_PERMIT
        with self._lock:
            if self.state == OPEN:
                left = self.opened_at + self.config.cooldown_s - self._owner.clock()
                if left > 0:
                    raise CircuitOpen(f"{self.name} is open after {self.config.failures} consecutive "
                                      f"failures (last: {self.last_error}); retry in {left:.1f} s")
                self._move(HALF_OPEN, "cooldown over")
            if self.state == HALF_OPEN:
                if self.probes_out + self.probes_ok >= self.config.probes:
                    raise CircuitOpen(f"{self.name} is half-open and its {self.config.probes} probe(s) are "
                                      f"in flight")
                self.probes_out += 1
                return 2 + self.round
            return NORMAL_PERMIT

    def allows(self, permit: int) -> bool:
        """At start: an ordinary permit runs only while the breaker is closed; a probe always."""
        return permit != NORMAL_PERMIT or self.state == CLOSED

    def release(self, permit: int) -> None:
        """The task holding ``permit`` ended without running."""
        if permit != NORMAL_PERMIT:
            with self._lock:
                if self.state == HALF_OPEN and permit == 2 + self.round:
                    self.probes_out -= 1

    def record(self, permit: int, ok: bool, error: str = "") -> None:
        """The task holding ``permit`` ran and succeeded (``ok``) or failed with ``error``."""
        if ok and permit == NORMAL_PERMIT and self.state == CLOSED and not self.consecutive:
            return  # the hot path
        with self._lock:
            if permit != NORMAL_PERMIT:
                if self.state != HALF_OPEN or permit != 2 + self.round:
                    return  # a probe of an earlier half-open round
                self.probes_out -= 1
                if not ok:
                    self.last_error = error
                    self._open(f"probe failed: {error}")
                    return
                self.probes_ok += 1
                if self.probes_ok >= self.config.probes:
                    self.consecutive = 0
                    self._move(CLOSED, f"{self.probes_ok} probe(s) succeeded")
                return
            if self.state != CLOSED:
                return
            if ok:
                self.consecutive = 0
                return
            self.consecutive += 1
            self.last_error = error
            if self.consecutive >= self.config.failures:
                self._open(f"{self.consecutive} consecutive failures (last: {error})")

    def _open(self, reason: str) -> None:
        self.opened_at = self._owner.clock()
        self.opens += 1
        self._move(OPEN, reason)

    def _move(self, state: str, reason: str) -> None:
        old, self.state = self.state, state
        self.probes_out = self.probes_ok = 0
        if state == HALF_OPEN:
            self.round += 1
        self._owner._changed(self, old, state, reason)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"bundle": self.key[0], "entry": self.key[1], "version": self.version, "state": self.state,
                    "consecutive_failures": self.consecutive, "opens": self.opens,
                    "last_error": self.last_error}


class Breakers:
    """The registry of one runtime: a breaker per (bundle, entry), created on first use."""

    def __init__(self, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic,
                 history: int = 64) -> None:
        self.config = config or BreakerConfig()
        self.clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[tuple[str, str], Breaker] = {}
        self.transitions: deque[dict[str, Any]] = deque(maxlen=history)

    def get(self, bundle: str, entry: str, version: str = "") -> Breaker:
        """The breaker of ``bundle``/``entry``; a different ``version`` starts from a fresh one."""
        key = (bundle, entry)
        b = self._breakers.get(key)
        if b is None or b.version != version:
            with self._lock:
                b = self._breakers.get(key)
                if b is None or b.version != version:
                    b = self._breakers[key] = Breaker(key, version, self.config, self)
        return b

    def _changed(self, b: Breaker, old: str, new: str, reason: str) -> None:
        level = logging.WARNING if new == OPEN else logging.INFO
        log.log(level, "circuit breaker %s: %s -> %s (%s)", b.name, old, new, reason)
        self.transitions.append({"bundle": b.key[0], "entry": b.key[1], "from": old, "to": new,
                                 "reason": reason, "at": round(self.clock(), 3)})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            items = list(self._breakers.values())
        return {"breakers": [b.snapshot() for b in items], "transitions": list(self.transitions)}
