"""Tests for vm.tools.quantize: fp32/fp16/uint8 conversion and the trade-off report."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from vm.errors import BadInput  # noqa: E402
from vm.ml.models import ModelSession  # noqa: E402
from vm.tools.quantize import (  # noqa: E402
    MODES,
    REPORT_KEYS,
    format_table,
    quantize_model,
    quantize_table,
    sample_inputs_for,
)

ROOT = Path(__file__).resolve().parents[2]


def mlp_bytes(d_in: int = 32, hidden: int = 128, seed: int = 0) -> bytes:
    """features float32 (N, d_in) -> MatMul/Add/Relu -> MatMul/Add -> Sigmoid -> scores (N, 1)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((d_in, hidden)) / np.sqrt(d_in)).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32)
    b2 = np.zeros(1, np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W1"], ["h0"]),
         helper.make_node("Add", ["h0", "b1"], ["h1"]),
         helper.make_node("Relu", ["h1"], ["h"]),
         helper.make_node("MatMul", ["h", "W2"], ["z0"]),
         helper.make_node("Add", ["z0", "b2"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["scores"])],
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d_in])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(a, n) for a, n in
                     ((w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2"))],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def int_input_bytes() -> bytes:
    """ids int64 (batch, 3) -> Gather from an embedding table -> ReduceSum -> out float32 (batch, 8)."""
    table = np.random.default_rng(2).standard_normal((10, 8)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["e"]),
         helper.make_node("ReduceSum", ["e", "axes"], ["out"], keepdims=0)],
        "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(table, "emb"),
                     helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Point tempfile at an empty directory so that leftovers can be seen."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def _op_types(model_bytes: bytes) -> set[str]:
    return {n.op_type for n in onnx.load_from_string(model_bytes).graph.node}


def test_fp32_is_unchanged_but_reported():
    data = mlp_bytes()
    new, report = quantize_model(data, "fp32")
    assert new == data
    assert tuple(report) == REPORT_KEYS
    assert report["mode"] == "fp32"
    assert report["size_before"] == report["size_after"] == len(data)
    assert report["max_abs_diff"] == 0.0 and report["mean_abs_diff"] == 0.0
    assert report["latency_before_ms"] > 0 and report["latency_after_ms"] > 0


def test_fp16_halves_weights_keeps_float32_io():
    data = mlp_bytes()
    new, report = quantize_model(data, "fp16")
    assert report["size_after"] == len(new) < 0.6 * len(data)
    sess = ModelSession("fp16", new)
    assert sess.inputs[0].dtype == np.float32 and sess.outputs[0].dtype == np.float32
    assert "Cast" in _op_types(new)
    assert 0 < report["max_abs_diff"] < 1e-2
    assert report["mean_abs_diff"] <= report["max_abs_diff"]


def test_uint8_dynamic_quantisation(private_tmp):
    data = mlp_bytes()
    new, report = quantize_model(data, "uint8")
    assert report["size_after"] == len(new) < 0.4 * len(data)
    ops = _op_types(new)
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert 0 < report["max_abs_diff"] < 0.1
    weights = [t for t in onnx.load_from_string(new).graph.initializer if t.data_type == TensorProto.INT8]
    assert weights, "int8 weights by default"
    assert list(private_tmp.iterdir()) == [], "the temp dir must be removed"


def test_uint8_weights_option():
    new, _ = quantize_model(mlp_bytes(), "uint8", weight_type="uint8")
    assert [t for t in onnx.load_from_string(new).graph.initializer if t.data_type == TensorProto.UINT8]
    with pytest.raises(BadInput, match="weight_type"):
        quantize_model(mlp_bytes(), "uint8", weight_type="int4")


def test_sample_inputs_are_used_and_checked():
    data = mlp_bytes()
    zeros = {"features": np.zeros((3, 32), np.float32)}
    _, r0 = quantize_model(data, "fp16", zeros)
    _, r1 = quantize_model(data, "fp16")
    assert r0["max_abs_diff"] != r1["max_abs_diff"]
    with pytest.raises(BadInput, match="sample_inputs do not fit"):
        quantize_model(data, "fp16", {"features": np.zeros((3, 32), np.float64)})
    with pytest.raises(BadInput, match="sample_inputs do not fit"):
        quantize_model(data, "fp16", {"x": np.zeros((3, 32), np.float32)})


def test_generated_sample_inputs_follow_the_signature():
    feeds = sample_inputs_for(mlp_bytes())
    assert feeds["features"].shape == (8, 32) and feeds["features"].dtype == np.float32
    ids = sample_inputs_for(int_input_bytes(), batch=2)["ids"]
    assert ids.shape == (2, 3) and ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 10
    rows = quantize_table(int_input_bytes())
    assert [r["mode"] for r in rows] == list(MODES)


def test_table_shares_one_baseline():
    rows = quantize_table(mlp_bytes())
    assert [r["mode"] for r in rows] == ["fp32", "fp16", "uint8"]
    assert len({r["latency_before_ms"] for r in rows}) == 1
    assert len({r["size_before"] for r in rows}) == 1
    assert rows[0]["size_after"] > rows[1]["size_after"] > rows[2]["size_after"]
    text = format_table(rows)
    assert all(m in text for m in MODES) and "latency ms" in text


@pytest.mark.parametrize("args, words", [
    ((b"junk", "fp16"), "cannot load"),
    (("text", "fp16"), "must be bytes"),
    ((b"", "fp32"), "empty"),
])
def test_bad_models(args, words):
    with pytest.raises(BadInput, match=words):
        quantize_model(*args)


def test_bad_mode():
    with pytest.raises(BadInput, match="mode must be one of fp32, fp16, uint8"):
        quantize_model(mlp_bytes(), "int4")


def test_import_is_lazy():
    code = ("import sys\nimport vm.tools.quantize\n"
            "assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
