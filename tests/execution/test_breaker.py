"""Circuit breaker state machine, driven by a fake clock (no sleeping, no timing asserts)."""
from __future__ import annotations

import pytest

from vm.errors import BadInput, CircuitOpen
from vm.execution.breaker import CLOSED, HALF_OPEN, NORMAL_PERMIT, OPEN, BreakerConfig, Breakers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(failures: int = 3, cooldown_s: float = 10.0, probes: int = 1) -> tuple[Breakers, Clock]:
    clock = Clock()
    return Breakers(BreakerConfig(failures=failures, cooldown_s=cooldown_s, probes=probes), clock=clock), clock


def fail(b, n: int = 1) -> None:
    for _ in range(n):
        b.record(b.acquire(), False, "script: boom")


def test_opens_after_n_consecutive_failures_only() -> None:
    reg, _ = make(failures=3)
    b = reg.get("bundle", "rank", "1.0")
    fail(b, 2)
    b.record(b.acquire(), True)  # a success resets the count
    fail(b, 2)
    assert b.state == CLOSED and b.consecutive == 2
    fail(b)
    assert b.state == OPEN
    with pytest.raises(CircuitOpen, match="bundle:rank is open after 3 consecutive failures"):
        b.acquire()


def test_open_half_open_closed_and_open_again() -> None:
    reg, clock = make(failures=2, cooldown_s=10, probes=2)
    b = reg.get("bundle", "rank", "1.0")
    fail(b, 2)
    assert b.state == OPEN
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        b.acquire()
    clock.now += 0.2
    p1 = b.acquire()
    assert b.state == HALF_OPEN and p1 != NORMAL_PERMIT
    p2 = b.acquire()
    with pytest.raises(CircuitOpen, match="half-open"):
        b.acquire()  # only `probes` probes at a time
    b.record(p1, True)
    assert b.state == HALF_OPEN
    b.record(p2, True)
    assert b.state == CLOSED
    # ... and it opens again after another run of failures
    fail(b, 2)
    assert b.state == OPEN and b.opens == 2
    # a failed probe re-opens it for a fresh cooldown
    clock.now += 11
    probe = b.acquire()
    b.record(probe, False, "timeout: slow")
    assert b.state == OPEN and b.opens == 3
    with pytest.raises(CircuitOpen):
        b.acquire()
    states = [(t["from"], t["to"]) for t in reg.snapshot()["transitions"]]
    assert states == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (CLOSED, OPEN),
                      (OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]


def test_released_probe_frees_its_slot_and_stale_probes_are_ignored() -> None:
    reg, clock = make(failures=1, cooldown_s=1, probes=1)
    b = reg.get("b", "e")
    fail(b)
    clock.now += 2
    p = b.acquire()
    b.release(p)  # refused by a full queue: it never ran
    p2 = b.acquire()
    b.record(p2, False, "x")
    assert b.state == OPEN
    clock.now += 2
    p3 = b.acquire()
    b.record(p, True)  # a probe of an earlier round: no effect
    assert b.state == HALF_OPEN
    b.record(p3, True)
    assert b.state == CLOSED


def test_ordinary_permits_do_not_run_or_count_while_open() -> None:
    reg, _ = make(failures=2)
    b = reg.get("b", "e")
    queued = b.acquire()  # admitted while closed, still queued when the breaker opens
    fail(b, 2)
    assert not b.allows(queued)
    b.record(queued, True)  # a late success of an ordinary permit does not close it
    assert b.state == OPEN


def test_new_version_gets_a_fresh_breaker_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    reg, _ = make(failures=1)
    b = reg.get("b", "e", "1.0")
    with caplog.at_level("WARNING", logger="edgevm.breaker"):
        fail(b)
    assert "b:e: closed -> open" in caplog.text
    assert reg.get("b", "e", "1.0") is b
    fresh = reg.get("b", "e", "1.1")
    assert fresh is not b and fresh.state == CLOSED
    snap = reg.snapshot()
    assert snap["breakers"][0]["state"] == CLOSED and snap["breakers"][0]["version"] == "1.1"


def test_config_is_checked() -> None:
    with pytest.raises(BadInput):
        BreakerConfig(failures=0)
    with pytest.raises(BadInput):
        BreakerConfig(probes=0)
