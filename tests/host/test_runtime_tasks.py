"""The task runtime through the Python API: infer_async callbacks, priorities, event triggers with
chains (CalcTask -> InferTask), kept features, needPv, PreloadTask, circuit breakers, metrics, and
shutdown with tasks in flight. Ordering is forced with events; nothing asserts on speed."""
from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest

from vm.errors import BadInput, Busy, CircuitOpen, Closed, NotFound
from vm.host.runtime import Runtime

WAIT = 10.0

FEATURES = """
def features(inputs):
    return {"page": inputs.get("pageId"), "click": inputs.get("clickId"), "keys": sorted(inputs)}


def rank(inputs):
    return {"page": inputs.get("pageId"), "features": inputs.get("features")}


def echo(inputs):
    return inputs


def flaky(inputs):
    if inputs.get("fail"):
        raise ValueError("asked to fail")
    return "ok"


def spin(inputs):
    while True:
        pass


def slow(inputs):
    n = 0
    for i in range(inputs.get("n", 100000)):
        n += i
    return n
"""

ENTRIES = {name: f"features:{name}" for name in ("features", "rank", "echo", "flaky", "spin", "slow")}

TRIGGERS = {
    "triggers": [
        {"taskName": "InferTask", "events": [{"type": "mta", "pageId": "Home", "needPv": False,
                                              "clickIds": ["Sku"]}]},
        {"taskName": "CalcTask", "events": [{"type": "mta", "pageId": "List", "needPv": True,
                                             "clickIds": ["Filter"]}]},
        {"taskName": "UseKept", "events": [{"type": "mta", "pageId": "Cart", "clickIds": ["Buy"]}]},
        {"taskName": "SpinChain", "events": [{"type": "mta", "pageId": "Slow", "clickIds": ["Go"]}]},
        {"taskName": "PreloadTask", "events": [{"type": "app", "pageId": "Launch", "needPv": True}]},
        {"taskName": "echo", "events": [{"type": "mta", "clickIds": ["Anywhere"]}]},
    ],
    "tasks": {
        "InferTask": {"kind": "infer", "business": "rank", "after": ["CalcTask"], "priority": "core"},
        "CalcTask": {"kind": "calc", "business": "features"},
        "UseKept": {"kind": "infer", "business": "rank", "uses": ["CalcTask"]},
        "Spin": {"kind": "calc", "business": "spin", "deadline_ms": 100},
        "SpinChain": {"kind": "infer", "business": "rank", "after": ["Spin"]},
    },
}


class Listener:
    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        with self.cv:
            self.events.append(event)
            self.cv.notify_all()

    def wait_for(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        with self.cv:
            assert self.cv.wait_for(lambda: {e["task_id"] for e in self.events} >= set(ids), WAIT)
            return {e["task_id"]: e for e in self.events if e["task_id"] in ids}


class Replies:
    """Collects infer_async callbacks by task id."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.got: dict[int, list[tuple[int, bytes, int]]] = {}
        self.order: list[int] = []
        self._pending: list[tuple[int, bytes, int]] = []

    def callback(self, tag: int) -> Any:
        def cb(status: int, data: bytes) -> None:
            with self.cv:
                self.got.setdefault(tag, []).append((status, data, threading.get_ident()))
                self.order.append(tag)
                self.cv.notify_all()
        return cb

    def wait(self, n: int) -> None:
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.got) >= n, WAIT), f"{len(self.got)} of {n} replies"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Path:
    from conftest import BundleMaker

    return BundleMaker(tmp_path_factory.mktemp("tasks"), keys_dir)(
        {"features.py": FEATURES}, name="shop", system="shop", entries=ENTRIES, extra=TRIGGERS)


@pytest.fixture(scope="module", params=["process", "thread"])
def rt(bundle: Path, keys_dir: Path, request: pytest.FixtureRequest):
    runtime = Runtime({"keys": keys_dir, "deadline_ms": 2000, "isolation": request.param})
    runtime.load(bundle)
    listener = Listener()
    runtime.set_listener(listener)
    runtime.listener = listener  # type: ignore[attr-defined]
    yield runtime
    runtime.close()


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


# ---------------------------------------------------------------- the API trigger

def test_infer_async_delivers_once_from_a_runtime_thread(rt: Runtime) -> None:
    replies = Replies()
    ids = [rt.infer_async("shop", "echo", pack({"i": i}), replies.callback(i), priority=("core", "normal", "low", 0,
                                                                                         1, 2)[i % 6])
           for i in range(12)]
    assert len(set(ids)) == 12
    replies.wait(12)
    me = threading.get_ident()
    for i in range(12):
        ((status, data, thread),) = replies.got[i]
        assert status == 0 and unpack(data) == {"i": i} and thread != me


def test_infer_async_errors_reach_the_callback(rt: Runtime) -> None:
    replies = Replies()
    rt.infer_async("shop", "flaky", pack({"fail": True}), replies.callback(0))
    rt.infer_async("shop", "spin", pack({}), replies.callback(1), deadline_ms=50)
    replies.wait(2)
    ((status, data, _),) = replies.got[0]
    assert status == 6 and "ValueError: asked to fail" in data.decode()
    ((status, data, _),) = replies.got[1]
    assert status == 7 and "deadline" in data.decode()


def test_refusals_raise_and_never_call_back(rt: Runtime) -> None:
    called = []
    with pytest.raises(NotFound):
        rt.infer_async("shop", "nope", pack({}), lambda s, d: called.append(s))
    with pytest.raises(BadInput, match="priority"):
        rt.infer_async("shop", "echo", pack({}), lambda s, d: called.append(s), priority="urgent")
    with pytest.raises(BadInput, match="deadline_ms"):
        rt.infer_async("shop", "echo", pack({}), lambda s, d: called.append(s), deadline_ms=0)
    with pytest.raises(BadInput, match="callable"):
        rt.infer_async("shop", "echo", pack({}), None)  # type: ignore[arg-type]
    assert rt.infer("shop", "echo", {"x": 1}, priority="low") == {"x": 1}
    time.sleep(0.05)
    assert called == []


def test_full_queue_is_busy_and_counted(bundle: Path, keys_dir: Path) -> None:
    with Runtime({"keys": keys_dir, "queue_size": 2, "deadline_ms": 5000}) as rt:
        rt.load(bundle)
        replies = Replies()
        accepted, busy = 0, 0
        for i in range(50):
            try:
                rt.infer_async("shop", "slow", pack({"n": 300000}), replies.callback(i), priority="low")
                accepted += 1
            except Busy as exc:
                assert "low queue is full" in str(exc)
                busy += 1
        assert busy > 0
        replies.wait(accepted)
        counts = rt.metrics()["tasks"]["infer"]["shop/slow"]
        assert (counts["submitted"], counts["refused"], counts["done"]) == (accepted, busy, accepted)


# ---------------------------------------------------------------- event triggers

def test_click_runs_calc_then_infer_with_the_features(rt: Runtime) -> None:
    ids = rt.track({"type": "mta", "pageId": "Home", "clickId": "Sku", "sku": 42})
    assert len(ids) == 2
    got = rt.listener.wait_for(ids)  # type: ignore[attr-defined]
    calc, infer = got[ids[0]], got[ids[1]]
    assert (calc["task_name"], calc["kind"], calc["status"]) == ("CalcTask", "calc", 0)
    assert (infer["task_name"], infer["kind"], infer["status"]) == ("InferTask", "infer", 0)
    assert infer["bundle"] == "shop" and infer["system"] == "shop" and infer["business"] == "rank"
    features = unpack(calc["result"])
    assert features == {"page": "Home", "click": "Sku", "keys": ["clickId", "pageId", "sku", "type"]}
    assert unpack(infer["result"]) == {"page": "Home", "features": {"CalcTask": features}}


def test_need_pv_page_view_triggers_and_features_are_kept(rt: Runtime) -> None:
    assert rt.track({"type": "mta", "pageId": "Home"}) == []  # needPv false: page views do not trigger
    ids = rt.track({"type": "mta", "pageId": "List"})         # needPv true: the page view triggers
    assert len(ids) == 1
    calc = rt.listener.wait_for(ids)[ids[0]]  # type: ignore[attr-defined]
    assert calc["status"] == 0 and unpack(calc["result"])["page"] == "List"
    # a later task that `uses` the kept CalcTask result gets the latest one without running it
    (use,) = rt.track_msgpack(pack({"type": "mta", "pageId": "Cart", "clickId": "Buy"}))
    out = unpack(rt.listener.wait_for([use])[use]["result"])  # type: ignore[attr-defined]
    assert out["features"]["CalcTask"]["page"] == "List"
    assert rt.metrics()["kept_features"] >= 1


def test_wildcard_click_and_unmatched_events(rt: Runtime) -> None:
    (tid,) = rt.track({"type": "mta", "pageId": "Anything", "clickId": "Anywhere", "v": 1})
    ev = rt.listener.wait_for([tid])[tid]  # type: ignore[attr-defined]
    assert ev["task_name"] == "echo" and unpack(ev["result"])["v"] == 1
    assert rt.track({"type": "mta", "pageId": "Nowhere", "clickId": "Nothing"}) == []
    with pytest.raises(BadInput):
        rt.track({"pageId": "Home"})
    with pytest.raises(BadInput):
        rt.track_msgpack(b"\xc1")
    with pytest.raises(BadInput):
        rt.track(["not", "a", "dict"])  # type: ignore[arg-type]


def test_timed_out_step_stops_the_event_chain(rt: Runtime) -> None:
    ids = rt.track({"type": "mta", "pageId": "Slow", "clickId": "Go"})
    got = rt.listener.wait_for(ids)  # type: ignore[attr-defined]
    spin, infer = got[ids[0]], got[ids[1]]
    assert spin["task_name"] == "Spin" and spin["status"] == 7 and spin["result"] is None
    assert infer["status"] == 7 and "chain stopped: step shop:Spin timed out" in infer["error"]
    assert rt.infer("shop", "echo", {"after": 1}) == {"after": 1}  # the runtime moves on


def test_preload_task_warms_models(make_bundle, keys_dir: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = make_bundle({"features.py": "def entry(inputs):\n    return 1\n"},
                       binary={"m.onnx": model.SerializeToString()},
                       extra={"models": {"m": "m.onnx"}, "triggers": [
                           {"taskName": "PreloadTask", "events": [{"type": "app", "pageId": "Launch",
                                                                   "needPv": True}]}]})
    assert onnx is not None
    with Runtime({"keys": keys_dir}) as rt:
        rt.load(path)
        listener = Listener()
        rt.set_listener(listener)
        (tid,) = rt.track({"type": "app", "pageId": "Launch"})
        ev = listener.wait_for([tid])[tid]
        assert ev["kind"] == "preload" and ev["status"] == 0
        assert unpack(ev["result"]) == {"warmed": ["m"], "skipped": {}}
        assert rt.metrics()["tasks"]["preload"]["test:models"]["done"] == 1


# ---------------------------------------------------------------- breaker, metrics, shutdown

def test_breaker_open_half_open_closed_and_open_again(bundle: Path, keys_dir: Path) -> None:
    with Runtime({"keys": keys_dir, "breaker_failures": 3, "breaker_cooldown_ms": 200,
                  "breaker_probes": 1}) as rt:
        rt.load(bundle)
        for _ in range(3):
            with pytest.raises(Exception, match="asked to fail"):
                rt.infer("shop", "flaky", {"fail": True})
        with pytest.raises(CircuitOpen, match="shop:flaky is open"):
            rt.infer("shop", "flaky", {"fail": False})
        with pytest.raises(CircuitOpen):
            rt.infer_async("shop", "flaky", pack({}), lambda s, d: None)
        assert rt.infer("shop", "echo", {"other": "entry"}) == {"other": "entry"}  # per (bundle, entry)
        states = {b["entry"]: b["state"] for b in rt.metrics()["breakers"]}
        assert states["flaky"] == "open"
        time.sleep(0.25)  # the cooldown
        assert rt.infer("shop", "flaky", {"fail": False}) == "ok"  # the half-open probe succeeds
        for _ in range(3):
            with pytest.raises(Exception, match="asked to fail"):
                rt.infer("shop", "flaky", {"fail": True})
        with pytest.raises(CircuitOpen):
            rt.infer("shop", "flaky", {})
        m = rt.metrics()
        moves = [(t["from"], t["to"]) for t in m["transitions"] if t["entry"] == "flaky"]
        assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed"), ("closed", "open")]
        counts = m["tasks"]["infer"]["shop/flaky"]
        assert counts["failed"] == 6 and counts["refused"] == 3 and counts["done"] == 1


def test_metrics_are_plain_data_with_percentiles(rt: Runtime) -> None:
    for i in range(20):
        rt.infer("shop", "echo", {"i": i})
    m = rt.metrics()
    msgpack.packb(m, use_bin_type=True)  # the C API returns it as msgpack
    echo = m["tasks"]["infer"]["shop/echo"]
    assert echo["done"] >= 20 and echo["submitted"] >= echo["done"]
    for hist in (echo["queue_wait_ms"], echo["run_ms"]):
        assert hist["count"] >= 20 and 0 <= hist["p50_ms"] <= hist["p90_ms"] <= hist["p99_ms"] <= hist["max_ms"]
    assert set(m["queues"]) == {"core", "normal", "low"}
    assert {"workers", "stuck_now", "stuck_total", "queued"} <= set(rt.stats())


def test_close_with_tasks_in_flight_loses_no_callback(bundle: Path, keys_dir: Path) -> None:
    rt = Runtime({"keys": keys_dir, "deadline_ms": 5000, "close_timeout_ms": 100})
    rt.load(bundle)
    listener = Listener()
    rt.set_listener(listener)
    replies = Replies()
    tags = 0
    for i in range(60):
        rt.infer_async("shop", "slow", pack({"n": 20000}), replies.callback(tags), priority=i % 3)
        tags += 1
    # a script still running at close: its caller gets Closed; the watchdog still stops it at its deadline
    rt.infer_async("shop", "spin", pack({}), replies.callback(tags), priority="core", deadline_ms=500)
    tags += 1
    event_ids = []
    for _ in range(10):
        event_ids += rt.track({"type": "mta", "pageId": "Home", "clickId": "Sku"})
    rt.close()
    replies.wait(tags)
    assert Counter(len(v) for v in replies.got.values()) == Counter({1: tags})
    statuses = Counter(v[0][0] for v in replies.got.values())
    assert set(statuses) <= {0, Closed.code} and statuses[Closed.code] >= 1
    got = listener.wait_for(event_ids)
    assert all(e["status"] in (0, Closed.code) for e in got.values())
    with pytest.raises(Closed):
        rt.infer_async("shop", "echo", pack({}), lambda s, d: None)
    with pytest.raises(Closed):
        rt.track({"type": "mta", "pageId": "Home", "clickId": "Sku"})
