"""Models in bundles: shipped as bytes, sessions preloaded at load, reached with edge.model(), and
quantised at pack time with the report stored in the bundle and printed by the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TARGET

from vm.host.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]


def linear_model(d: int = 16, out: int = 4) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(d, out)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(out,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


SCRIPT = """
import numpy as np

import edge


def entry(inputs):
    m = edge.model("lin")
    x = np.asarray(inputs["x"], dtype=np.float32)
    return {"y": m.run({"x": x})["y"], "inputs": [i["name"] for i in m.inputs]}


def wrong_dtype(inputs):
    return edge.model("lin").run({"x": np.zeros((1, 16))})


def missing(inputs):
    return edge.model("nope")
"""


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models") / "src"
    d.mkdir()
    (d / "features.py").write_text(SCRIPT)
    (d / "lin.onnx").write_bytes(linear_model())
    (d / "bundle.json").write_text(json.dumps({
        "name": "lin", "version": "1.0.0", "system": "s", "models": {"lin": "lin.onnx"},
        "entries": {"b": "features:entry", "wrong": "features:wrong_dtype", "missing": "features:missing"}}))
    return d


def test_model_runs_in_the_sandbox(src: Path, keys_dir: Path, tmp_path: Path) -> None:
    from vm.tools.packer import pack

    pack(src, keys_dir, tmp_path / "lin.evb", targets=[TARGET])
    x = np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32)
    with Runtime({"keys": keys_dir, "deadline_ms": 2000}) as rt:
        info = rt.load(tmp_path / "lin.evb")
        assert info["models"] == ["lin"]
        out = rt.infer("s", "b", {"x": x.tolist()})
        import onnxruntime as ort

        direct = ort.InferenceSession((src / "lin.onnx").read_bytes()).run(None, {"x": x})[0]
        np.testing.assert_allclose(np.asarray(out["y"], dtype=np.float32), direct, rtol=1e-6)
        assert out["inputs"] == ["x"]
        from vm.errors import ScriptError

        with pytest.raises(ScriptError, match="float32"):
            rt.infer("s", "wrong", {})
        with pytest.raises(ScriptError, match="no model named 'nope'"):
            rt.infer("s", "missing", {})


def test_pack_quantises_and_reports(src: Path, keys_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.evb"
    proc = subprocess.run([sys.executable, "-m", "vm.host.cli", "pack", str(src), "--keys", str(keys_dir), "-o", str(out),
                           "--target", TARGET, "--quantize", "lin=uint8"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "model lin:" in proc.stdout and "size_before" in proc.stdout
    inspect = subprocess.run([sys.executable, "-m", "vm.host.cli", "inspect", str(out), "--keys", str(keys_dir)], cwd=ROOT,
                             capture_output=True, text=True)
    report = json.loads(inspect.stdout)["manifest"]["quantization"]["lin"]
    assert report["mode"] == "uint8" and report["size_before"] > 0 and report["max_abs_diff"] >= 0
    with Runtime({"keys": keys_dir, "deadline_ms": 2000}) as rt:
        rt.load(out)
        y = rt.infer("s", "b", {"x": np.ones((2, 16), dtype=np.float32).tolist()})["y"]
        assert np.asarray(y).shape == (2, 4)
