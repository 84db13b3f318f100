"""Tests for vm.ml.models: device profiles, ONNX Runtime sessions from bytes, checks, deadlines."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from vm.errors import BadInput, Timeout  # noqa: E402
from vm.execution import watchdog  # noqa: E402
from vm.guard.context import ScriptTimeout  # noqa: E402
from vm.ml import models  # noqa: E402
from vm.ml.models import DeviceProfile, ModelSession, load_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- model builders

def _model(graph: onnx.GraphProto, opset: int = 17) -> bytes:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def mlp_bytes(d_in: int = 6, d_out: int = 3, seed: int = 0) -> bytes:
    """MatMul + Add + Sigmoid over x: float32 (N, d_in) -> y: float32 (N, d_out)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d_in, d_out)).astype(np.float32)
    b = rng.standard_normal(d_out).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["y"]),
         helper.make_node("ReduceSum", ["z"], ["total"], keepdims=0)],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", d_out]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return _model(g)


def mlp_reference(x: np.ndarray, d_in: int = 6, d_out: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d_in, d_out)).astype(np.float32)
    b = rng.standard_normal(d_out).astype(np.float32)
    return 1.0 / (1.0 + np.exp(-(x @ w + b)))


def multi_input_bytes() -> bytes:
    """ids: int64 (N,), feats: float32 (N, 4), name: string (1,) -> out float32 (N, 4), tag string."""
    g = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["idsf", "axes"], ["ids2"]),
         helper.make_node("Mul", ["feats", "ids2"], ["out"]),
         helper.make_node("Identity", ["name"], ["tag"])],
        "multi",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("name", TensorProto.STRING, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("tag", TensorProto.STRING, [1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    return _model(g)


def reshape_bytes() -> bytes:
    """x: float32 (N,) reshaped to (2, -1): fails inside ORT when N is odd."""
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, None])],
        initializer=[helper.make_tensor("shape", TensorProto.INT64, [2], [2, -1])],
    )
    return _model(g)


SLOW_DIM = 128


def slow_loop_bytes() -> bytes:
    """A Loop of ``n`` (an input) iterations of x = tanh(x @ W): its run time scales with ``n``."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_in", "W"], ["xw"]),
         helper.make_node("Tanh", ["xw"], ["x_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, SLOW_DIM])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, SLOW_DIM])],
    )
    w = (np.random.default_rng(1).standard_normal((SLOW_DIM, SLOW_DIM)) * 0.05).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Loop", ["n", "cond", "x"], ["y"], body=body)],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SLOW_DIM]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SLOW_DIM])],
        initializer=[helper.make_tensor("cond", TensorProto.BOOL, [], [True]),
                     numpy_helper.from_array(w, "W")],
    )
    return _model(g)


# ---------------------------------------------------------------- a stand-in for vm.guard.context

class FakeContext:
    """The CallContext API models.py codes against, with a timer thread as the watchdog."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self._lock = threading.Lock()
        self._hooks: dict[int, object] = {}
        self._next = 0
        self.expired = False
        self.added = 0
        self.removed = 0
        self.fired = 0
        self._timer = threading.Timer(max(timeout_s, 0.0), self._expire)
        self._timer.daemon = True
        if timeout_s > 0:
            self._timer.start()
        else:
            self.expired = True

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def add_cancel(self, fn):
        with self._lock:
            self.added += 1
            if not self.expired:
                self._next += 1
                self._hooks[self._next] = fn
                return self._next
        fn()
        return -1

    def remove_cancel(self, token: int) -> None:
        with self._lock:
            self.removed += 1
            self._hooks.pop(token, None)

    def pending(self) -> int:
        with self._lock:
            return len(self._hooks)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            hooks = list(self._hooks.values())
            self._hooks.clear()
        for fn in hooks:
            self.fired += 1
            fn()

    def close(self) -> None:
        self._timer.cancel()


@pytest.fixture
def fake_watchdog(monkeypatch):
    """Install a fake ``vm.guard.context`` module whose ``current()`` is a per-thread FakeContext."""
    local = threading.local()
    mod = types.ModuleType("vm.guard.context")
    mod.current = lambda: getattr(local, "ctx", None)

    def enter(timeout_s: float) -> FakeContext:
        local.ctx = FakeContext(timeout_s)
        return local.ctx

    mod.enter = enter
    monkeypatch.setitem(sys.modules, "vm.guard.context", mod)
    yield mod
    ctx = getattr(local, "ctx", None)
    if ctx is not None:
        ctx.close()


# ---------------------------------------------------------------- DeviceProfile

def test_profile_defaults_are_phone_class():
    p = DeviceProfile.from_config(None)
    assert p == DeviceProfile()
    assert p.intra_op_threads == 1 and p.inter_op_threads == 1
    assert p.allow_spinning is False and p.cpu_mem_arena is False
    so = p.session_options()
    assert so.intra_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert so.enable_cpu_mem_arena is False
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.optimized_model_filepath == ""  # never writes the (plaintext) optimised model
    names, _ = p.providers()
    assert names == ["CPUExecutionProvider"]


def test_profile_from_config_full():
    cfg = {
        "intra_op_threads": 2, "inter_op_threads": 0, "graph_optimization": "basic",
        "execution_mode": "parallel", "allow_spinning": True, "cpu_mem_arena": True,
        "mem_pattern": False, "log_severity": 4, "free_dim_overrides": {"N": 8},
        "execution_providers": ["NoSuchExecutionProvider",
                                {"name": "CPUExecutionProvider", "options": {}}],
    }
    p = DeviceProfile.from_config(cfg)
    so = p.session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 0
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert so.enable_mem_pattern is False
    names, opts = p.providers()
    assert names == ["CPUExecutionProvider"] and opts == [{}]
    assert DeviceProfile.from_config(p.to_config()) == p


def test_profile_providers_keep_preference_order_and_end_with_cpu():
    available = [n for n in ort.get_available_providers() if n != "CPUExecutionProvider"]
    wanted = ["FooExecutionProvider", *reversed(available)]
    p = DeviceProfile.from_config({"execution_providers": wanted})
    names, _ = p.providers()
    assert names == [*reversed(available), "CPUExecutionProvider"]
    # CPU listed first still ends up last, once.
    p = DeviceProfile.from_config({"execution_providers": ["CPUExecutionProvider", *available]})
    assert p.providers()[0] == [*available, "CPUExecutionProvider"]


@pytest.mark.parametrize("cfg, words", [
    ("fast", "mapping"),
    ({"threads": 2}, "unknown key"),
    ({"intra_op_threads": -1}, "intra_op_threads"),
    ({"intra_op_threads": 2.0}, "intra_op_threads must be an integer"),
    ({"intra_op_threads": True}, "intra_op_threads must be an integer"),
    ({"inter_op_threads": 1000}, "between"),
    ({"graph_optimization": "max"}, "graph_optimization must be one of"),
    ({"execution_mode": 1}, "execution_mode"),
    ({"execution_providers": "CPUExecutionProvider"}, "execution_providers"),
    ({"execution_providers": []}, "execution_providers"),
    ({"execution_providers": ["cpu"]}, "execution_providers[0]"),
    ({"execution_providers": [{"name": "CPUExecutionProvider", "opts": {}}]}, "unknown keys"),
    ({"execution_providers": [{"name": "XnnpackExecutionProvider", "options": {"a": [1]}}]}, "scalars"),
    ({"allow_spinning": 0}, "allow_spinning must be true or false"),
    ({"cpu_mem_arena": "yes"}, "cpu_mem_arena"),
    ({"log_severity": 7}, "log_severity"),
    ({"free_dim_overrides": {"N": 0}}, "N"),
    ({"free_dim_overrides": [1]}, "free_dim_overrides"),
])
def test_profile_validation(cfg, words):
    with pytest.raises(BadInput) as info:
        DeviceProfile.from_config(cfg)
    assert words in str(info.value)
    assert str(info.value).startswith("device_profile:")


def test_import_is_lazy_and_profile_needs_no_onnxruntime():
    code = (
        "import sys\n"
        "from vm.ml.models import DeviceProfile, load_models\n"
        "p = DeviceProfile.from_config({'intra_op_threads': 2})\n"
        "assert load_models({}, p) == {}\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'\n"
        "assert 'vm.guard.context' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# ---------------------------------------------------------------- ModelSession basics

def test_session_signature_and_run_matches_numpy():
    s = ModelSession("ranker", mlp_bytes(), DeviceProfile())
    assert [i.name for i in s.inputs] == ["x"]
    assert s.inputs[0].shape == ("N", 6) and s.inputs[0].dtype == np.float32
    assert [o.name for o in s.outputs] == ["y", "total"]
    sig = s.signature()
    assert sig["inputs"] == [{"name": "x", "type": "tensor(float)", "dtype": "float32", "shape": ["N", 6]}]
    assert sig["outputs"][1]["shape"] == []
    assert "CPUExecutionProvider" in sig["providers"]
    x = np.random.default_rng(3).standard_normal((5, 6)).astype(np.float32)
    out = s.run({"x": x})
    assert set(out) == {"y", "total"}
    np.testing.assert_allclose(out["y"], mlp_reference(x), rtol=1e-5, atol=1e-6)
    only = s.run({"x": x}, outputs=["y"])
    assert list(only) == ["y"]
    # Symbolic batch dims are free.
    assert s.run({"x": x[:1]})["y"].shape == (1, 3)
    assert "ranker" in repr(s)


def test_session_keeps_no_plaintext_copy():
    data = mlp_bytes()
    s = ModelSession("m", data, DeviceProfile())
    assert s.size == len(data)
    assert not any(v is data or (isinstance(v, bytes) and v == data) for v in vars(s).values())


def test_run_multiple_inputs_and_strings():
    s = ModelSession("multi", multi_input_bytes(), DeviceProfile())
    feeds = {"ids": np.array([1, 2], np.int64), "feats": np.ones((2, 4), np.float32),
             "name": np.array(["abc"])}
    out = s.run(feeds)
    np.testing.assert_array_equal(out["out"], [[1] * 4, [2] * 4])
    assert list(out["tag"]) == ["abc"]
    feeds["name"] = np.array(["x"], dtype=object)
    assert list(s.run(feeds)["tag"]) == ["x"]
    assert s.signature()["inputs"][2]["dtype"] == "str"


@pytest.mark.parametrize("feeds, exc, words", [
    ({"x": np.ones((2, 6), np.float32), "extra": np.ones(1)}, ValueError, "unknown input(s) ['extra']"),
    ({}, ValueError, "missing input(s) ['x']"),
    ({"x": np.ones((2, 6), np.float64)}, TypeError, "expects dtype float32, got float64"),
    ({"x": np.ones((2, 6), np.float16)}, TypeError, "expects dtype float32, got float16"),
    ({"x": [[1.0] * 6]}, TypeError, "must be a numpy array, got list"),
    ({"x": np.ones((6,), np.float32)}, ValueError, "expects rank 2"),
    ({"x": np.ones((2, 5), np.float32)}, ValueError, "axis 1 must be 6"),
])
def test_run_rejects_bad_feeds(feeds, exc, words):
    s = ModelSession("ranker", mlp_bytes(), DeviceProfile())
    with pytest.raises(exc) as info:
        s.run(feeds)
    assert words in str(info.value)
    assert "'ranker'" in str(info.value)


def test_run_rejects_bad_feeds_multi():
    s = ModelSession("multi", multi_input_bytes(), DeviceProfile())
    good = {"ids": np.array([1, 2], np.int64), "feats": np.ones((2, 4), np.float32), "name": np.array(["a"])}
    with pytest.raises(TypeError, match="'ids' expects dtype int64, got int32"):
        s.run({**good, "ids": np.array([1, 2], np.int32)})
    with pytest.raises(TypeError, match="'name' expects dtype str, got float32"):
        s.run({**good, "name": np.ones(1, np.float32)})
    with pytest.raises(ValueError, match=r"expects shape \(1,\), got \(2,\)"):
        s.run({**good, "name": np.array(["a", "b"])})
    with pytest.raises(TypeError, match="feeds must be a dict"):
        s.run([good["ids"]])


def test_run_rejects_bad_outputs():
    s = ModelSession("ranker", mlp_bytes(), DeviceProfile())
    x = np.ones((1, 6), np.float32)
    with pytest.raises(ValueError, match=r"unknown output\(s\) \['scores'\]"):
        s.run({"x": x}, outputs=["scores"])
    with pytest.raises(TypeError, match="outputs must be a list"):
        s.run({"x": x}, outputs="y")


def test_error_inside_onnxruntime_names_the_model():
    s = ModelSession("reshaper", reshape_bytes(), DeviceProfile())
    assert s.run({"x": np.arange(4, dtype=np.float32)})["y"].shape == (2, 2)
    with pytest.raises(RuntimeError, match="model 'reshaper'"):
        s.run({"x": np.arange(3, dtype=np.float32)})


def test_load_models_preloads_all_and_names_the_bad_one():
    sessions = load_models({"a": mlp_bytes(seed=1), "b": multi_input_bytes()}, DeviceProfile())
    assert set(sessions) == {"a", "b"} and all(isinstance(s, ModelSession) for s in sessions.values())
    with pytest.raises(BadInput, match="model 'broken'"):
        load_models({"ok": mlp_bytes(), "broken": b"\x08\x07not a model"}, DeviceProfile())
    with pytest.raises(BadInput, match="model 'empty'"):
        load_models({"empty": b""})
    with pytest.raises(BadInput, match="model 'text'"):
        load_models({"text": "not bytes"})  # type: ignore[dict-item]
    with pytest.raises(BadInput):
        load_models([("a", mlp_bytes())])  # type: ignore[arg-type]


def test_profile_settings_reach_the_session():
    p = DeviceProfile.from_config({"free_dim_overrides": {"N": 4}, "graph_optimization": "disable"})
    s = ModelSession("m", mlp_bytes(), p)
    assert s.inputs[0].shape == (4, 6)
    with pytest.raises(ValueError, match="axis 0 must be 4"):
        s.run({"x": np.ones((2, 6), np.float32)})


# ---------------------------------------------------------------- threads

def test_concurrent_runs_match_serial():
    s = ModelSession("ranker", mlp_bytes(d_in=32, d_out=8), DeviceProfile())
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal((int(rng.integers(1, 200)), 32)).astype(np.float32) for _ in range(64)]
    serial = [s.run({"x": b})["y"] for b in batches]

    def work(k: int) -> list[tuple[int, np.ndarray]]:
        out = []
        for _rep in range(5):
            for i in range(k, len(batches), 4):
                out.append((i, s.run({"x": batches[i]})["y"]))
        return out

    with ThreadPoolExecutor(4) as pool:
        results = [r for chunk in pool.map(work, range(4)) for r in chunk]
    assert len(results) == 5 * len(batches)
    for i, y in results:
        np.testing.assert_array_equal(y, serial[i])


# ---------------------------------------------------------------- deadlines

def _slow_session() -> tuple[ModelSession, float]:
    """The slow model and the seconds one iteration takes (measured)."""
    s = ModelSession("slow", slow_loop_bytes(), DeviceProfile())
    x = np.ones((1, SLOW_DIM), np.float32)
    n = 20000
    t0 = time.perf_counter()
    s.run({"x": x, "n": np.array(n, np.int64)})
    return s, (time.perf_counter() - t0) / n


def test_run_outside_a_guarded_call_has_no_deadline():
    assert models._current_context() is None
    s = ModelSession("ranker", mlp_bytes(), DeviceProfile())
    assert s.run({"x": np.ones((1, 6), np.float32)})["y"].shape == (1, 3)


def test_deadline_terminates_a_long_run(fake_watchdog):
    s, per_iter = _slow_session()
    n = 50_000_000
    expected_full = per_iter * n  # tens of seconds at least
    assert expected_full > 10
    ctx = fake_watchdog.enter(0.2)
    t0 = time.perf_counter()
    with pytest.raises(Timeout) as info:
        s.run({"x": np.ones((1, SLOW_DIM), np.float32), "n": np.array(n, np.int64)})
    elapsed = time.perf_counter() - t0
    assert "model 'slow'" in str(info.value) and info.value.code == Timeout.code
    assert ctx.fired == 1 and ctx.pending() == 0
    assert elapsed < min(5.0, expected_full / 10), (elapsed, expected_full)


def test_deadline_already_passed_does_not_run(fake_watchdog):
    s = ModelSession("ranker", mlp_bytes(), DeviceProfile())
    ctx = fake_watchdog.enter(-1.0)
    with pytest.raises(Timeout, match="before the model ran"):
        s.run({"x": np.ones((1, 6), np.float32)})
    assert ctx.added == 0


def test_cancel_hook_is_removed_after_a_normal_run(fake_watchdog):
    s = ModelSession("ranker", mlp_bytes(), DeviceProfile())
    ctx = fake_watchdog.enter(30.0)
    for _ in range(3):
        s.run({"x": np.ones((2, 6), np.float32)})
    assert ctx.added == 3 and ctx.removed == 3 and ctx.pending() == 0
    # Input errors are raised before any hook is registered.
    with pytest.raises(TypeError):
        s.run({"x": np.ones((2, 6), np.int64)})
    assert ctx.added == 3


def test_deadlines_are_per_thread(fake_watchdog):
    """One thread's deadline aborts its own run only; a concurrent run on the same session finishes."""
    s, per_iter = _slow_session()
    x = np.ones((1, SLOW_DIM), np.float32)
    n_ok = max(1000, int(0.6 / per_iter))  # about 0.6 s of work
    results: dict[str, object] = {}

    def short() -> None:
        fake_watchdog.enter(0.1)
        try:
            s.run({"x": x, "n": np.array(50_000_000, np.int64)})
            results["short"] = "finished"
        except Timeout:
            results["short"] = "timeout"

    def unguarded() -> None:
        results["long"] = s.run({"x": x, "n": np.array(n_ok, np.int64)})["y"]

    threads = [threading.Thread(target=short), threading.Thread(target=unguarded)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results["short"] == "timeout"
    np.testing.assert_allclose(results["long"], s.run({"x": x, "n": np.array(n_ok, np.int64)})["y"])


def test_real_watchdog_terminates_a_long_run():
    s, per_iter = _slow_session()
    n = 50_000_000
    wd = watchdog.Watchdog()
    try:
        t0 = time.perf_counter()
        feeds = {"x": np.ones((1, SLOW_DIM), np.float32), "n": np.array(n, np.int64)}
        with pytest.raises((Timeout, ScriptTimeout)):
            wd.run(time.monotonic() + 0.2, s.run, feeds)
        assert time.perf_counter() - t0 < min(5.0, per_iter * n / 10)
    finally:
        wd.close()
