"""A bundle's trigger and task config: which tracked events create which tasks (validated at pack
and, behind the loader's gate, at load; ``vm.execution.triggers`` matches events against it).

A bundle's ``bundle.json`` carries the trigger config in the shape of JD's end-side container::

    {"triggers": [{"taskName": "InferTask",
                   "events": [{"type": "mta", "pageId": "JD_Home", "needPv": false,
                               "clickIds": ["JD_Home_Sku"]}]}],
     "tasks": {"InferTask": {"kind": "infer", "business": "rank", "after": ["CalcTask"]},
               "CalcTask": {"kind": "calc", "business": "features"}}}

``taskName`` names a task of ``tasks``; when ``tasks`` does not define it, a name that is a business
code of the bundle is an infer task of that entry, ``PreloadTask`` warms the bundle's models, and
``InferTask``/``CalcTask`` run the bundle's only entry. A task's ``after`` tasks run before it in the
same chain (a DAG); ``uses`` names calc tasks whose latest kept result it reads without running them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vm.errors import BadInput

KINDS = {"infer": "infer", "infertask": "infer", "calc": "calc", "calctask": "calc",
         "preload": "preload", "preloadtask": "preload"}
DEFAULT_PRIORITY = {"infer": 1, "calc": 1, "preload": 2}
QUEUES = ("core", "normal", "low")  # the scheduler's three queues, highest priority first
PRIORITIES = {name: level for level, name in enumerate(QUEUES)}
ANY_PAGE = None


@dataclass(frozen=True)
class TaskSpec:
    """One task a trigger can create."""

    name: str
    kind: str                      # "infer" | "calc" | "preload"
    business: str | None           # the entry it runs (optional for preload)
    after: tuple[str, ...] = ()    # tasks that run before it in the same chain
    uses: tuple[str, ...] = ()     # calc tasks whose latest kept result it reads
    priority: int | None = None    # 0 core, 1 normal, 2 low; None: by kind
    deadline_ms: float | None = None
    chain_deadline_ms: float | None = None

    @property
    def queue(self) -> int:
        return DEFAULT_PRIORITY[self.kind] if self.priority is None else self.priority


@dataclass(frozen=True)
class Rule:
    """One event pattern of one trigger."""

    task: str
    type: str
    page_id: str | None
    need_pv: bool
    click_ids: tuple[str, ...]


@dataclass(frozen=True)
class BundleTriggers:
    """A bundle's parsed trigger and task config."""

    tasks: dict[str, TaskSpec]
    rules: tuple[Rule, ...]

    def chain(self, name: str) -> list[TaskSpec]:
        """``name`` and every task it runs after, dependencies first."""
        order: list[TaskSpec] = []
        seen: set[str] = set()

        def visit(n: str) -> None:
            if n in seen:
                return
            seen.add(n)
            spec = self.tasks[n]
            for dep in spec.after:
                visit(dep)
            order.append(spec)

        visit(name)
        return order


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"{what} must be a non-empty string, got {value!r}")
    return value


def _names(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise BadInput(f"{what} must be a list of task names, got {value!r}")
    return tuple(_str(v, what) for v in value)


def _ms(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3_600_000:
        raise BadInput(f"{what} must be a number of milliseconds in (0, 3600000], got {value!r}")
    return float(value)


def parse_priority(value: Any, what: str = "priority") -> int:
    """``"core"``/``"normal"``/``"low"`` or 0/1/2 as a queue index."""
    if isinstance(value, str) and value in PRIORITIES:
        return PRIORITIES[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2:
        return value
    raise BadInput(f"{what} must be 'core', 'normal', 'low' or 0, 1, 2; got {value!r}")


def _task(name: str, doc: Any, entries: frozenset[str]) -> TaskSpec:
    where = f"bundle.json: tasks.{name}"
    if not isinstance(doc, Mapping):
        raise BadInput(f"{where} must be an object")
    unknown = set(doc) - {"kind", "business", "after", "uses", "priority", "deadline_ms", "chain_deadline_ms"}
    if unknown:
        raise BadInput(f"{where} has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    kind = KINDS.get(str(doc.get("kind", "")).lower())
    if kind is None:
        raise BadInput(f"{where}.kind must be 'infer', 'calc' or 'preload', got {doc.get('kind')!r}")
    business = doc.get("business")
    if business is not None or kind != "preload":
        business = _str(business, f"{where}.business")
        if business not in entries:
            raise BadInput(f"{where}.business {business!r} is not an entry of the bundle "
                           f"(entries: {', '.join(sorted(entries))})")
    prio = doc.get("priority")
    return TaskSpec(name=name, kind=kind, business=business, after=_names(doc.get("after"), f"{where}.after"),
                    uses=_names(doc.get("uses"), f"{where}.uses"),
                    priority=None if prio is None else parse_priority(prio, f"{where}.priority"),
                    deadline_ms=_ms(doc.get("deadline_ms"), f"{where}.deadline_ms"),
                    chain_deadline_ms=_ms(doc.get("chain_deadline_ms"), f"{where}.chain_deadline_ms"))


def _implicit(name: str, entries: frozenset[str]) -> TaskSpec | None:
    if name in entries:
        return TaskSpec(name=name, kind="infer", business=name)
    if name == "PreloadTask":
        return TaskSpec(name=name, kind="preload", business=None)
    if name in ("InferTask", "CalcTask") and len(entries) == 1:
        return TaskSpec(name=name, kind=KINDS[name.lower()], business=next(iter(entries)))
    return None


def parse_bundle(manifest: Mapping[str, Any], entries: Iterable[str]) -> BundleTriggers:
    """Validate a manifest's ``triggers`` and ``tasks``; ``BadInput`` says what is wrong."""
    entry_set = frozenset(entries)
    raw_tasks = manifest.get("tasks") or {}
    if not isinstance(raw_tasks, Mapping):
        raise BadInput("bundle.json: 'tasks' must map task names to task definitions")
    tasks = {str(n): _task(str(n), d, entry_set) for n, d in raw_tasks.items()}

    def need(name: str, what: str) -> TaskSpec:
        spec = tasks.get(name) or _implicit(name, entry_set)
        if spec is None:
            raise BadInput(f"bundle.json: {what} names task {name!r}, which is neither defined in 'tasks' nor a "
                           f"business code of the bundle")
        tasks[name] = spec
        return spec

    raw = manifest.get("triggers") or []
    if isinstance(raw, Mapping) and set(raw) == {"triggers"}:  # the article's shape: {"triggers": [...]}
        raw = raw["triggers"] or []
    if not isinstance(raw, list):
        raise BadInput("bundle.json: 'triggers' must be a list of {taskName, events} (or {\"triggers\": [...]})")
    rules: list[Rule] = []
    for i, trig in enumerate(raw):
        where = f"bundle.json: triggers[{i}]"
        if not isinstance(trig, Mapping):
            raise BadInput(f"{where} must be an object")
        name = _str(trig.get("taskName"), f"{where}.taskName")
        need(name, f"triggers[{i}].taskName")
        events = trig.get("events")
        if not isinstance(events, list) or not events:
            raise BadInput(f"{where}.events must be a non-empty list")
        for j, ev in enumerate(events):
            w = f"{where}.events[{j}]"
            if not isinstance(ev, Mapping):
                raise BadInput(f"{w} must be an object")
            page = ev.get("pageId")
            page = ANY_PAGE if page is None else _str(page, f"{w}.pageId")
            need_pv = ev.get("needPv", False)
            if not isinstance(need_pv, bool):
                raise BadInput(f"{w}.needPv must be true or false")
            clicks = ev.get("clickIds") or []
            if not isinstance(clicks, list):
                raise BadInput(f"{w}.clickIds must be a list of strings")
            clicks = tuple(_str(c, f"{w}.clickIds[]") for c in clicks)
            if not need_pv and not clicks:
                raise BadInput(f"{w} matches nothing: give clickIds or set needPv")
            rules.append(Rule(task=name, type=_str(ev.get("type"), f"{w}.type"), page_id=page,
                              need_pv=need_pv, click_ids=clicks))
    # Resolve every dependency and refuse cycles.
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise BadInput(f"bundle.json: task dependencies form a cycle: {' -> '.join((*path, name))}")
        state[name] = 1
        spec = tasks[name]
        for dep in spec.after:
            need(dep, f"tasks.{name}.after")
            visit(dep, (*path, name))
        for used in spec.uses:
            if need(used, f"tasks.{name}.uses").kind != "calc":
                raise BadInput(f"bundle.json: tasks.{name}.uses names {used!r}, which is not a calc task")
        state[name] = 2

    for name in list(tasks):
        visit(name, ())
    return BundleTriggers(tasks=tasks, rules=tuple(rules))
