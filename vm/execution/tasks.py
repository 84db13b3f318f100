"""Tasks and chains: the units the scheduler runs, and their life cycle.

A ``Task`` is ``fn(*args)`` on a worker of one of three priority queues (``core``, ``normal``,
``low``) before its deadline; tasks submitted together with dependencies form a ``Chain`` (a DAG,
checked by ``check_dag``) with one deadline for all. A task is WAITING for its dependencies, QUEUED,
RUNNING, then SETTLED exactly once with a result or a typed error.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from vm.bundle.triggers import PRIORITIES, QUEUES
from vm.errors import BadInput, EdgeError
from vm.execution import parking
from vm.execution.breaker import Breaker

CORE, NORMAL, LOW = (PRIORITIES[name] for name in QUEUES)
QUEUE_NAMES = QUEUES
WAITING, QUEUED, RUNNING, SETTLED = range(4)
_INF = float("inf")


class Task:
    """One unit of work: ``fn(*args)`` on a worker of queue ``priority`` before its deadline.

    ``guarded`` (the default): ``fn`` runs script code on the worker thread, under the watchdog and
    ``memory_limit``. Otherwise ``fn`` runs its work elsewhere (a worker process) and bounds it itself:
    it is called as ``fn(deadline, *args)``. ``bundle`` (name, version) is the bundle version the
    task runs, for its metrics."""

    __slots__ = ("id", "name", "kind", "entry", "label", "priority", "fn", "args", "budget_s", "hard_deadline",
                 "deadline", "memory_limit", "guarded", "breaker", "permit", "deps", "dependents", "pending", "chain",
                 "on_done", "info", "state", "ran", "cancelled", "result", "error", "ready_at", "started",
                 "finished", "timed", "tkey", "bundle", "_once", "_event")

    def __init__(self, fn: Callable[..., Any], *args: Any, kind: str = "task", entry: str = "", name: str = "",
                 label: str = "", priority: int = NORMAL, budget_s: float | None = None,
                 deadline: float | None = None, memory_limit: int | None = None, breaker: Breaker | None = None,
                 deps: Sequence[Task] = (), on_done: Callable[[Task], None] | None = None,
                 info: Any = None, guarded: bool = True, bundle: tuple[str, str] | None = None) -> None:
        if budget_s is None and deadline is None:
            raise ValueError("a task needs a budget or a deadline")
        if priority not in (CORE, NORMAL, LOW):
            raise ValueError(f"bad priority {priority!r}")
        self.id = 0
        self.fn, self.args = fn, args
        self.kind, self.entry, self.name = kind, entry, name
        self.label = label or name or f"{kind} {entry}".strip()
        self.priority = priority
        self.budget_s, self.hard_deadline = budget_s, deadline
        self.deadline = _INF
        self.memory_limit = memory_limit
        self.guarded = guarded
        self.breaker, self.permit = breaker, 0
        self.deps: tuple[Task, ...] = tuple(deps)
        self.dependents: list[Task] = []
        self.pending = 0
        self.chain: Chain | None = None
        self.on_done, self.info = on_done, info
        self.state = WAITING
        self.ran = False
        self.cancelled = False
        self.result: Any = None
        self.error: EdgeError | None = None
        self.ready_at = self.started = self.finished = 0.0
        self.timed = True  # the deadline thread ends it at its deadline (``call`` waits itself)
        self.tkey: int | None = None
        self.bundle = bundle
        self._once = threading.Lock()
        self._event: parking.Event | None = None

    @property
    def status(self) -> int:
        """0 when it succeeded, else the error code."""
        return 0 if self.error is None else self.error.code

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.label} {QUEUE_NAMES[self.priority]} state={self.state}>"


class Chain:
    """Tasks submitted together with dependencies between them; one deadline for all."""

    __slots__ = ("id", "tasks", "deadline", "left", "stopped", "state", "tkey")

    def __init__(self, ident: int, tasks: list[Task], deadline: float) -> None:
        self.id = ident
        self.tasks = tasks
        self.deadline = deadline
        self.left = len(tasks)
        self.stopped = False
        self.state = WAITING
        self.tkey: int | None = None


def check_dag(batch: list[Task]) -> None:
    """Every dependency is in the batch and there is no cycle."""
    members = {id(t) for t in batch}
    indegree = {id(t): len(t.deps) for t in batch}
    users: dict[int, list[Task]] = {}
    for t in batch:
        if t.state != WAITING or t.id:
            raise BadInput(f"task {t.label} was already submitted")
        for d in t.deps:
            if id(d) not in members:
                raise BadInput(f"task {t.label} depends on {d.label}, which is not in the same submission")
            users.setdefault(id(d), []).append(t)
    ready = [t for t in batch if not t.deps]
    seen = 0
    while ready:
        t = ready.pop()
        seen += 1
        for u in users.get(id(t), ()):
            indegree[id(u)] -= 1
            if not indegree[id(u)]:
                ready.append(u)
    if seen != len(batch):
        raise BadInput("task dependencies form a cycle")

