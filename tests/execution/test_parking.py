"""vm.execution.parking keeps threading's Condition and Event semantics (its waiters park on a
queue of their own instead of a spinning lock: measured on 3.14t in test_free_threading.py)."""
from __future__ import annotations

import threading
import time

import pytest

from vm.execution import parking


def _waiters(cond: parking.Condition, n: int, woken: list[int]) -> list[threading.Thread]:
    def wait(i: int) -> None:
        with cond:
            if cond.wait(10):
                woken.append(i)

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def _until(cond: object, n: int) -> None:
    end = time.monotonic() + 10
    while len(cond._waiters) != n and time.monotonic() < end:  # type: ignore[attr-defined]
        time.sleep(0.001)


def test_notify_wakes_one_waiter_and_notify_all_the_rest() -> None:
    cond = parking.Condition(threading.Lock())
    woken: list[int] = []
    threads = _waiters(cond, 3, woken)
    _until(cond, 3)
    with cond:
        cond.notify()
    _until(cond, 2)
    time.sleep(0.05)
    assert len(woken) == 1
    with cond:
        cond.notify_all()
    for t in threads:
        t.join(10)
    assert sorted(woken) == [0, 1, 2]


def test_a_wait_that_times_out_returns_false_and_leaves_no_waiter() -> None:
    cond = parking.Condition()
    with cond:
        assert cond.wait(0.01) is False
        assert cond.wait(0) is False
        assert cond.wait(-1) is False
        assert not cond._waiters  # type: ignore[attr-defined]


def test_wait_for_returns_the_predicate_once_it_holds() -> None:
    cond = parking.Condition()
    box: list[int] = []

    def put() -> None:
        time.sleep(0.02)
        with cond:
            box.append(1)
            cond.notify_all()

    threading.Thread(target=put, daemon=True).start()
    with cond:
        assert cond.wait_for(lambda: box, 10) == [1]
        assert cond.wait_for(lambda: False, 0.01) is False


def test_waiting_or_notifying_without_the_lock_is_refused() -> None:
    cond = parking.Condition()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0)
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.notify()


def test_an_event_wakes_every_waiter_and_stays_set() -> None:
    event = parking.Event()
    assert not event.is_set() and event.wait(0.01) is False
    seen: list[bool] = []
    threads = [threading.Thread(target=lambda: seen.append(event.wait(10)), daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    _until(event._cond, 3)
    event.set()
    for t in threads:
        t.join(10)
    assert seen == [True, True, True]
    assert event.is_set() and event.wait(0) is True
