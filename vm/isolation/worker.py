"""A worker process: one bundle, locked down, computing only.

Forked from the zygote with one socket, its channel to the supervisor. It receives its bundle (the
parts the supervisor's loader verified, decrypted and checked: the worker never sees a key), creates
the model sessions and the bundle's sandbox, starts its watchdog thread, and then locks itself down
(``vm.isolation.lockdown``: no fds but the channel, an empty environment, rlimits, no new privileges,
a seccomp allowlist) before any script code runs: the module top levels run after the lockdown. Then
it answers calls, one at a time, each under the call's deadline and memory budget, as in thread mode
(``vm.execution.executor``), so both modes give the same results and errors.

Frames (``vm.isolation.channel``):
    supervisor -> worker   ["load", bundle, settings], ["call", id, op, business, payload, deadline,
                           features, declared] (declared: the rows the entry's ``events.prefetch``
                           reads, per read [since_ms, complete, max_rows, columns] or None),
                           ["snapshots", {name: [layout, body, encrypted]}] (before a call:
                           the feature snapshot versions it lacks), ["exit"]
    worker -> supervisor   ["ready", info] | ["error", 0, code, message, detail] after load;
                           ["ok", id, result] | ["error", id, code, message, detail] per call;
                           ["log", line] at any time (script output);
                           ["events", op, args] during a call (an ``edge.events`` call: the worker
                           cannot open files), answered by
    supervisor -> worker   ["events", "ok", columns | None] | ["events", "error", code, message]
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from vm import wire
from vm.bundle import loader
from vm.bundle import snapshot as snapshot_format
from vm.bundle.tables import Prefetch
from vm.errors import ALL_ERRORS, EdgeError, Internal
from vm.execution.executor import execute
from vm.execution.watchdog import Watchdog
from vm.guard import _guard
from vm.isolation import lockdown
from vm.isolation.channel import Channel, ChannelError
from vm.ml.profile import DeviceProfile
from vm.sandbox.instance import BundleInstance

MAX_LOG_LINES = 200   # per call (and during the load)
MAX_LOG_CHARS = 2000  # per line


class _Log:
    """Script output forwarded to the supervisor, capped per call."""

    def __init__(self, chan: Channel) -> None:
        self.chan = chan
        self.left = MAX_LOG_LINES
        self.dropped = 0

    def __call__(self, line: str) -> None:
        if self.left <= 0:
            self.dropped += 1
            return
        self.left -= 1
        self.chan.send("log", line[:MAX_LOG_CHARS])

    def reset(self) -> None:
        if self.dropped:
            self.chan.send("log", f"[edgevm: {self.dropped} more line(s) of output dropped]")
        self.left, self.dropped = MAX_LOG_LINES, 0


class _Events:
    """``edge.events`` in a worker. A query inside a window the call's entry declared
    (``events.prefetch``: the host read it before dispatch and sent it with the request) is cut
    from those rows here; every other call is a frame to the host, which runs it under the call's
    deadline and answers with the columns or a typed error."""

    def __init__(self, chan: Channel, prefetch: Mapping[str, tuple[Prefetch, ...]]) -> None:
        self.chan = chan
        self.prefetch = prefetch
        self.by_code = {cls.code: cls for cls in ALL_ERRORS}
        self.declared: list[tuple[Prefetch, int, int, dict[str, np.ndarray]]] = []  # this call's complete reads

    def start(self, business: str, declared: list) -> None:
        """A call of ``business`` begins with the rows sent with it (those the limit cut are not kept:
        a narrower window of them could miss rows the file holds)."""
        self.declared = [(read, doc[0], doc[2], wire.unpack_columns(doc[3]))
                         for read, doc in zip(self.prefetch.get(business, ()), declared, strict=False)
                         if doc is not None and doc[1]]

    def __call__(self, op: str, args: list) -> Any:
        data = wire.encode(args, what="the edge.events arguments")
        if op == "query" and self.declared:
            got = self._local(wire.decode(data))
            if got is not None:
                return got
        self.chan.send("events", op, data)
        msg = self.chan.recv()
        if msg[0] == "events" and len(msg) == 3 and msg[1] == "ok":
            return None if msg[2] is None else wire.unpack_columns(msg[2])
        if msg[0] == "events" and len(msg) == 4 and msg[1] == "error":
            raise self.by_code.get(msg[2], Internal)(str(msg[3]))
        raise Internal("the host answered an edge.events call with something else")

    def _local(self, args: Any) -> dict[str, np.ndarray] | None:
        """The answer from a declared read that holds the whole window asked for, with the same
        filters, fields among its own and a valid limit; None: ask the host (which also gives
        every error a bad argument deserves)."""
        if type(args) is not list or len(args) != 2 or type(args[1]) is not dict:
            return None
        table, spec = args
        since, until, limit, fields = (spec.get(k) for k in ("since_ms", "until_ms", "limit", "fields"))
        if type(since) is not int or not (until is None or type(until) is int) \
                or not (limit is None or type(limit) is int) or set(spec) - QUERY_ARGS:
            return None
        where = _filters(spec.get("where"))
        for read, d_since, max_rows, cols in self.declared:
            if read.table != table or since < d_since or where != _filters(read.query["where"]) \
                    or limit is not None and not 1 <= limit <= max_rows:
                continue
            if fields is None:
                if read.query["fields"] is not None:
                    continue
                names = tuple(cols)
            elif type(fields) is list and all(type(f) is str and f in cols for f in fields):
                names = tuple(dict.fromkeys(fields))
            else:
                continue
            ts = cols["ts"]
            mask = ts >= since
            if until is not None:
                mask &= ts < until
            picked = np.flatnonzero(mask)
            if limit is not None:
                picked = picked[-limit:]
            return {name: cols[name][picked] for name in names}
        return None


QUERY_ARGS = frozenset({"since_ms", "until_ms", "where", "fields", "limit"})


def _filters(where: Any) -> Any:
    """``where`` as {field: [(type, value)]}: two filters select the same rows only if equal so
    (``1``, ``1.0`` and ``True`` differ: the host checks each against the field's type)."""
    if where is None:
        return {}
    if type(where) is not dict:
        return None
    return {k: [(type(x), x) for x in (v if type(v) in (list, tuple) else [v])] for k, v in where.items()}


def _detail(error: EdgeError) -> dict[str, Any]:
    """The error's detail as plain data (it crosses the channel)."""
    try:
        wire.encode(error.detail)
        return dict(error.detail)
    except EdgeError:
        return {}


def _restore_snapshots(current: dict[str, Any], docs: dict[str, list[Any]]) -> dict[str, Any]:
    """A new view of the feature snapshots: ``current`` with those in ``docs`` (exported by the
    supervisor, ``vm.bundle.snapshot.export``) replaced; the arrays view the received bytes."""
    return {**current, **{name: snapshot_format.restore(layout, body, encrypted=encrypted)
                          for name, (layout, body, encrypted) in docs.items()}}


def serve(fd: int) -> int:
    """Run the worker on channel ``fd``; the process's exit code."""
    chan = Channel(socket.socket(fileno=fd), max_frame=(1 << 31) - 1)  # the supervisor is trusted
    try:
        msg = chan.recv()
    except ChannelError:
        return 0
    if msg[0] != "load" or len(msg) != 3:
        return 70
    _, bundle_doc, settings = msg
    log = _Log(chan)
    memory_limit = int(settings["memory_limit"]) or None
    if memory_limit:
        _guard.memory_install()
    try:
        bundle = loader.restore(bundle_doc)
        sessions: dict[str, Any] = {}
        if bundle.models:
            from vm.ml import models

            sessions = models.load_models(bundle.models, DeviceProfile.from_config(settings["profile"]))
        snapshots = _restore_snapshots({}, settings.get("snapshots") or {})
        events = _Events(chan, bundle.manifest.events.prefetch or {})
        instance = BundleInstance(bundle, sessions, log=log, max_result=int(settings["max_result"]),
                                  events=events, features=lambda: snapshots,
                                  ab_group=settings.get("ab_group"))
    except EdgeError as exc:
        chan.send("error", 0, exc.code, exc.message, _detail(exc))
        return 0
    instance.warm()  # each model's first run (slow: memory planning) happens now, not in a caller's call
    watchdog = Watchdog(grace_s=float(settings["grace_s"]))
    budget = int(settings["process_memory"])
    applied = lockdown.apply((fd,), data=lockdown.memory_usage().data + budget if budget else 0,
                             cpu_seconds=int(settings["cpu_seconds"]))
    deadline = float(settings["load_deadline"])
    for business in sorted(bundle.manifest.entries):
        _, error = execute(watchdog, deadline, instance.resolve, (business,), memory_limit=memory_limit,
                           label=f"loading {bundle.name} ({bundle.manifest.entries[business]})")
        if error is not None:
            log.reset()
            chan.send("error", 0, error.code, error.message, _detail(error))
            return 0
    log.reset()
    chan.send("ready", {"pid": os.getpid(), "lockdown": applied})
    ops = {"invoke": instance.invoke, "step": instance.step, "warm": lambda business, payload: instance.warm()}
    cpu_slack = int(settings["cpu_seconds"])
    while True:
        try:
            msg = chan.recv()
        except ChannelError:
            return 0
        if msg[0] == "exit":
            return 0
        if msg[0] == "snapshots" and len(msg) == 2:
            try:
                snapshots = _restore_snapshots(snapshots, msg[1])
            except EdgeError:
                return 70
            continue
        if msg[0] != "call" or len(msg) != 8:
            return 70
        _, cid, op, business, payload, deadline, features, declared = msg
        fn = ops.get(op)
        if fn is None:
            chan.send("error", cid, Internal.code, f"unknown operation {op!r}", {})
            continue
        args = (business, payload, [tuple(f) for f in features]) if op == "step" else (business, payload)
        if cpu_slack:
            lockdown.set_cpu_budget(max(deadline - time.monotonic(), 0.0) + cpu_slack)
        events.start(business, declared)
        result, error = execute(watchdog, float(deadline), fn, args, memory_limit=memory_limit,
                                label=f"{bundle.manifest.system}/{business}" if op != "warm" else f"{bundle.name}:models")
        events.declared = []
        log.reset()
        if error is not None:
            chan.send("error", cid, error.code, error.message, _detail(error))
        else:
            chan.send("ok", cid, result)
