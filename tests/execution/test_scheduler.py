"""vm.execution.scheduler with plain callables: priority order, the starvation bound, DAG order, chains stopped
by a failing or timed-out step, deadlines that do not wait for a stuck worker, bounded queues under
10,000-task bursts, and shutdown with tasks in flight. Ordering is forced with events, never timing."""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vm.errors import Busy, CircuitOpen, Closed, Timeout
from vm.execution.breaker import BreakerConfig, Breakers
from vm.execution.scheduler import Scheduler
from vm.execution.tasks import CORE, LOW, NORMAL, Task

WAIT = 10.0  # generous upper bound for anything that must happen; never an assertion about speed


@pytest.fixture
def make() -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def factory(**kw: Any) -> Scheduler:
        kw.setdefault("workers", (1, 1, 1))
        s = Scheduler(**kw)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close(timeout=2.0)


class Recorder:
    """Collects callbacks; ``wait(n)`` blocks until n arrived."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.calls: list[Task] = []

    def __call__(self, t: Task) -> None:
        with self.lock:
            self.calls.append(t)
            self.lock.notify_all()

    def wait(self, n: int) -> list[Task]:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.calls) >= n, WAIT), f"{len(self.calls)} of {n} callbacks"
            return list(self.calls)

    def by_name(self) -> dict[str, Task]:
        return {t.name: t for t in self.calls}


def blocker(sched: Scheduler, priority: int, release: threading.Event) -> threading.Event:
    """Occupy one worker of ``priority`` until ``release`` is set; return an event set once it runs."""
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(WAIT)

    sched.submit(Task(hold, priority=priority, budget_s=WAIT * 2, name="blocker"))
    assert started.wait(WAIT)
    return started


def spin() -> None:
    while True:
        pass


def test_workers_take_higher_priority_first(make) -> None:
    s = make(starvation_yields=1000, yield_to_higher=False)
    hold_hi, hold_low = threading.Event(), threading.Event()
    blocker(s, CORE, hold_hi)
    blocker(s, NORMAL, hold_hi)
    blocker(s, LOW, hold_low)
    order: list[str] = []
    rec = Recorder()
    for i in range(3):  # submitted low first: the free (low) worker must still serve core, then normal
        for prio, name in ((LOW, "low"), (NORMAL, "normal"), (CORE, "core")):
            s.submit(Task(order.append, f"{name}{i}", priority=prio, budget_s=WAIT, name=f"{name}{i}", on_done=rec))
    hold_low.set()
    rec.wait(9)
    hold_hi.set()
    assert order == ["core0", "core1", "core2", "normal0", "normal1", "normal2", "low0", "low1", "low2"]


def test_low_task_is_not_starved_beyond_the_bound(make) -> None:
    s = make(starvation_yields=2)
    hold_hi, hold_low = threading.Event(), threading.Event()
    blocker(s, CORE, hold_hi)
    blocker(s, NORMAL, hold_hi)
    blocker(s, LOW, hold_low)
    order: list[str] = []
    rec = Recorder()
    s.submit(Task(order.append, "low", priority=LOW, budget_s=WAIT, on_done=rec))
    for i in range(6):
        s.submit(Task(order.append, f"core{i}", priority=CORE, budget_s=WAIT, on_done=rec))
    hold_low.set()
    rec.wait(7)
    hold_hi.set()
    # the low worker helps with core work, but after 2 yields it runs its own task
    assert order == ["core0", "core1", "low", "core2", "core3", "core4", "core5"]


def test_low_task_runs_while_a_long_core_task_holds_its_worker(make) -> None:
    s = make(starvation_yields=3, yield_s=0.01)
    hold = threading.Event()
    blocker(s, CORE, hold)  # a core task is running: the low worker yields, but only 3 times
    rec = Recorder()
    s.submit(Task(lambda: "ran", priority=LOW, budget_s=WAIT, on_done=rec))
    assert rec.wait(1)[0].result == "ran"
    assert not hold.is_set()
    hold.set()


def test_dag_runs_in_dependency_order(make) -> None:
    s = make(workers=(2, 2, 2))
    log: list[tuple[str, str]] = []
    lock = threading.Lock()

    def step(name: str) -> str:
        with lock:
            log.append(("start", name))
        time.sleep(0.001)
        with lock:
            log.append(("end", name))
        return name

    rec = Recorder()
    prio = {"a": LOW, "b": CORE, "c": NORMAL, "d": LOW, "e": CORE, "f": NORMAL}
    tasks: dict[str, Task] = {}
    edges = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"], "f": ["a"]}
    for name, deps in edges.items():
        tasks[name] = Task(step, name, name=name, priority=prio[name], budget_s=WAIT,
                           deps=[tasks[d] for d in deps], on_done=rec)
    ids = s.submit(list(tasks.values()))
    assert len(set(ids)) == 6
    done = rec.wait(6)
    assert all(t.error is None for t in done)
    pos = {(kind, name): i for i, (kind, name) in enumerate(log)}
    for name, deps in edges.items():
        for d in deps:
            assert pos[("end", d)] < pos[("start", name)], f"{name} started before {d} ended"


def test_failed_step_stops_its_chain_and_the_rest_goes_on(make) -> None:
    s = make(workers=(1, 1, 1))
    rec = Recorder()
    a = Task(lambda: 1, name="a", budget_s=WAIT, on_done=rec)
    b = Task(lambda: 1 / 0, name="b", budget_s=WAIT, deps=[a], on_done=rec)
    c = Task(lambda: 1, name="c", budget_s=WAIT, deps=[b], on_done=rec)
    s.submit([a, b, c])
    got = {t.name: t for t in rec.wait(3)}
    assert got["a"].status == 0 and got["b"].status == 99 and "ZeroDivisionError" in str(got["b"].error)
    assert got["c"].status == 99 and "chain stopped: step b failed" in str(got["c"].error)
    assert not got["c"].ran
    assert s.call(Task(lambda: "next", budget_s=WAIT)) == "next"


def test_timed_out_step_stops_its_chain(make) -> None:
    s = make()
    rec = Recorder()
    a = Task(lambda: "a", name="a", budget_s=WAIT, on_done=rec)
    b = Task(spin, name="b", budget_s=0.05, deps=[a], on_done=rec)
    c = Task(lambda: "c", name="c", budget_s=WAIT, deps=[b], priority=CORE, on_done=rec)
    d = Task(lambda: "d", name="d", budget_s=WAIT, deps=[c], priority=LOW, on_done=rec)
    s.submit([a, b, c, d])
    got = {t.name: t for t in rec.wait(4)}
    assert got["a"].status == 0
    assert isinstance(got["b"].error, Timeout) and got["b"].ran
    for name in "cd":
        assert isinstance(got[name].error, Timeout) and "chain stopped: step b timed out" in str(got[name].error)
        assert not got[name].ran
    counts = s.metrics.snapshot()["totals"]
    assert (counts["done"], counts["timed_out"], counts["cancelled"]) == (1, 1, 2)
    assert s.call(Task(lambda: "moves on", budget_s=WAIT)) == "moves on"  # the runtime moves on


def test_chain_deadline_bounds_the_whole_chain(make) -> None:
    s = make()
    rec = Recorder()
    # every step alone has plenty of time; together they must finish within the chain's deadline
    a = Task(lambda: "a", name="a", budget_s=WAIT, on_done=rec)
    b = Task(spin, name="b", budget_s=WAIT, deps=[a], on_done=rec)
    c = Task(lambda: "c", name="c", budget_s=WAIT, deps=[b], on_done=rec)
    s.submit([a, b, c], chain_deadline=time.monotonic() + 0.2)
    got = {t.name: t for t in rec.wait(3)}
    assert got["a"].status == 0
    assert isinstance(got["b"].error, Timeout) and isinstance(got["c"].error, Timeout)


def test_callback_gets_timeout_while_the_worker_is_stuck_in_native_code(make) -> None:
    s = make(grace_s=0.05, max_stuck=2)
    release = threading.Event()
    rec = Recorder()
    # Event.wait releases the GIL and cannot be interrupted: like a long native op or model run
    s.submit(Task(release.wait, WAIT, name="stuck", priority=CORE, budget_s=0.1, on_done=rec))
    (t,) = rec.wait(1)
    assert isinstance(t.error, Timeout) and not release.is_set()
    # the sync caller gets its Timeout at the deadline as well
    with pytest.raises(Timeout):
        s.call(Task(release.wait, WAIT, priority=CORE, budget_s=0.1))
    # the stuck workers were retired and replaced: the core queue still serves
    assert s.call(Task(lambda: "served", priority=CORE, budget_s=WAIT)) == "served"
    assert s.stats()["stuck_total"] >= 1
    release.set()


def test_queued_task_times_out_at_its_deadline_even_if_no_worker_frees_up(make) -> None:
    s = make()
    hold = threading.Event()
    for p in (CORE, NORMAL, LOW):
        blocker(s, p, hold)
    rec = Recorder()
    s.submit(Task(lambda: 1, priority=LOW, budget_s=0.05, on_done=rec))
    (t,) = rec.wait(1)
    assert isinstance(t.error, Timeout) and not t.ran and not hold.is_set()
    hold.set()


def test_full_queue_refuses_with_busy_and_counts_it(make) -> None:
    s = make(queue_size=4)
    hold = threading.Event()
    for p in (CORE, NORMAL, LOW):
        blocker(s, p, hold)
    rec = Recorder()
    for _ in range(4):
        s.submit(Task(lambda: 1, kind="k", entry="e", priority=NORMAL, budget_s=WAIT, on_done=rec))
    with pytest.raises(Busy, match="normal queue is full"):
        s.submit(Task(lambda: 1, kind="k", entry="e", priority=NORMAL, budget_s=WAIT, on_done=rec))
    # a chain is accepted or refused as a whole, and its waiting steps hold their slots
    first = Task(lambda: 1, priority=LOW, budget_s=WAIT, on_done=rec)
    chain = [first, *(Task(lambda: 1, priority=LOW, budget_s=WAIT, deps=[first], on_done=rec) for _ in range(4))]
    with pytest.raises(Busy, match="low queue"):
        s.submit(chain)
    assert s.stats()["queues"]["low"]["waiting"] == 0
    hold.set()
    rec.wait(4)
    snap = s.metrics.snapshot()["tasks"]["k"]["e"]
    assert (snap["submitted"], snap["refused"], snap["done"]) == (4, 1, 4)


@pytest.mark.parametrize("blocked", [True, False])
def test_10k_burst_every_accepted_task_completes_exactly_once(make, blocked: bool) -> None:
    s = make(queue_size=64, workers=(1, 1, 1))
    hold = threading.Event()
    if blocked:
        for p in (CORE, NORMAL, LOW):
            blocker(s, p, hold)
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def done(t: Task) -> None:
        with lock:
            calls[t.id] += 1

    accepted: list[int] = []
    refused = [0]
    high_water = [0]

    def submitter(seed: int) -> None:
        rng = random.Random(seed)
        mine, busy = [], 0
        for _ in range(2500):
            try:
                mine += s.submit(Task(lambda: None, kind="burst", priority=rng.choice((CORE, NORMAL, LOW)),
                                      budget_s=WAIT, on_done=done))
            except Busy:
                busy += 1
            high_water[0] = max(high_water[0], s.stats()["queued"])
        with lock:
            accepted.extend(mine)
            refused[0] += busy

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hold.set()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with lock:
            if sum(calls.values()) >= len(accepted):
                break
        time.sleep(0.005)
    assert len(accepted) + refused[0] == 10_000
    assert refused[0] > 0 if blocked else True
    assert set(calls) == set(accepted) and set(calls.values()) == {1}
    assert high_water[0] <= 3 * 64  # memory stays bounded: never more than the queues hold
    # settled tasks left the deadline timer; its heap of bucket keys is compacted once it exceeds twice
    # the live buckets (at most one per queued task) plus 1024
    assert len(s._timer) == 0 and len(s._timer._keys) <= 2 * 3 * 64 + 1025
    snap = s.metrics.snapshot()["tasks"]["burst"][""]
    assert snap["submitted"] == len(accepted) and snap["refused"] == refused[0]
    assert snap["done"] == len(accepted)


def test_close_with_tasks_in_flight_loses_no_callback(make) -> None:
    s = make(workers=(1, 1, 1), queue_size=100)
    release = threading.Event()
    rec = Recorder()
    started = [threading.Event() for _ in range(3)]
    ids = []
    for p in (CORE, NORMAL, LOW):  # one running task per queue
        def hold(ev: threading.Event = started[p]) -> str:
            ev.set()
            release.wait(WAIT)
            return "finished"

        ids += s.submit(Task(hold, priority=p, budget_s=WAIT, on_done=rec))
    for ev in started:
        assert ev.wait(WAIT)
    for i in range(60):  # queued tasks and waiting chain steps
        a = Task(lambda: 1, priority=i % 3, budget_s=WAIT, on_done=rec)
        b = Task(lambda: 2, priority=(i + 1) % 3, budget_s=WAIT, deps=[a], on_done=rec)
        ids += s.submit([a, b])
    threading.Timer(0.05, release.set).start()  # the running tasks finish during close()
    s.close(timeout=WAIT)
    calls = rec.wait(len(ids))
    assert Counter(t.id for t in calls) == Counter(ids)
    for t in calls:
        assert t.status == 0 and t.result == "finished" or isinstance(t.error, Closed), t
    assert sum(t.status == 0 for t in calls) == 3
    with pytest.raises(Closed):
        s.submit(Task(lambda: 1, budget_s=1))


def test_close_settles_running_tasks_that_do_not_finish(make) -> None:
    s = make()
    release = threading.Event()
    rec = Recorder()
    s.submit(Task(release.wait, WAIT, budget_s=WAIT, on_done=rec))
    while not s.stats()["queues"]["normal"]["running"]:
        time.sleep(0.001)
    s.close(timeout=0.05)
    (t,) = rec.wait(1)
    assert isinstance(t.error, Closed) and "while" in str(t.error)
    release.set()


def test_close_from_inside_a_callback(make) -> None:
    s = make()
    rec = Recorder()
    closed = threading.Event()

    def cb(t: Task) -> None:
        s.close(timeout=0.5)
        closed.set()
        rec(t)

    s.submit(Task(lambda: 1, budget_s=WAIT, on_done=cb))
    assert closed.wait(WAIT)
    assert rec.wait(1)[0].status == 0


def test_breaker_refuses_fast_and_counts(make) -> None:
    s = make(breakers=Breakers(BreakerConfig(failures=2, cooldown_s=3600)))
    br = s.breakers.get("b", "e", "1")
    for _ in range(2):
        with pytest.raises(Exception, match="ZeroDivisionError"):
            s.call(Task(lambda: 1 / 0, kind="infer", entry="b/e", breaker=br, budget_s=WAIT))
    with pytest.raises(CircuitOpen):
        s.call(Task(lambda: 1, kind="infer", entry="b/e", breaker=br, budget_s=WAIT))
    snap = s.metrics.snapshot()["tasks"]["infer"]["b/e"]
    assert (snap["failed"], snap["refused"]) == (2, 1)
    assert s.snapshot()["breakers"][0]["state"] == "open"


def test_a_raising_callback_does_not_hurt_the_worker(make) -> None:
    s = make()

    def bad(t: Task) -> None:
        raise RuntimeError("host bug")

    s.submit(Task(lambda: 1, budget_s=WAIT, on_done=bad))
    assert s.call(Task(lambda: 2, budget_s=WAIT)) == 2


def test_bad_dags_are_refused(make) -> None:
    s = make()
    a = Task(lambda: 1, budget_s=1)
    b = Task(lambda: 1, budget_s=1, deps=[a])
    with pytest.raises(Exception, match="not in the same submission"):
        s.submit([b])
    c = Task(lambda: 1, budget_s=1)
    d = Task(lambda: 1, budget_s=1, deps=[c])
    c.deps = (d,)
    with pytest.raises(Exception, match="cycle"):
        s.submit([c, d])
