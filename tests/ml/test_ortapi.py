"""The device's ONNX Runtime binding (vm.ml.ortapi, the C API through cffi) against the onnxruntime
Python package: byte-identical outputs on the example models and on fuzzed inputs; typed errors,
never a crash, for bad inputs, corrupt models and a library that is too old or not ONNX Runtime."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("sklearn")

from test_models import mlp_bytes, multi_input_bytes, reshape_bytes  # noqa: E402

from vm.errors import BadInput, IncompatibleError  # noqa: E402
from vm.ml import ortapi  # noqa: E402
from vm.ml.models import DeviceProfile, ModelSession  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The example bundles' models, trained as their build scripts do."""
    from examples.photo import train as photo
    from examples.ranking import train as ranking

    out = tmp_path_factory.mktemp("models")
    ranking.main(out / "logreg")
    ranking.main(out / "mlp", model="mlp")
    photo.main(out / "photo")
    return {"ranker": (out / "logreg" / "ranker.onnx").read_bytes(),
            "ranker_mlp": (out / "mlp" / "ranker.onnx").read_bytes(),
            "photo": (out / "photo" / "photo.onnx").read_bytes(),
            "mlp": mlp_bytes(), "multi": multi_input_bytes()}


def _python_session(model: bytes, profile: DeviceProfile) -> ort.InferenceSession:
    """The same model and profile through the onnxruntime Python package: the reference."""
    names, options = profile.providers()
    return ort.InferenceSession(model, sess_options=profile.session_options(), providers=names,
                                provider_options=options)


def _random_feeds(session: ModelSession, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in session.inputs:
        shape = [d if isinstance(d, int) else batch for d in spec.shape]
        if spec.dtype == np.dtype(object):
            feeds[spec.name] = np.array([f"s{rng.integers(1000)}é" for _ in range(int(np.prod(shape)))],
                                        dtype=object).reshape(shape)
        elif spec.dtype.kind == "f":
            feeds[spec.name] = (rng.standard_normal(shape) * 10).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.integers(-50, 50, shape).astype(spec.dtype)
    return feeds


def _assert_identical(ours: dict[str, np.ndarray], reference: list, names: list[str]) -> None:
    assert list(ours) == names
    for name, want in zip(names, reference, strict=True):
        got = ours[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if got.dtype == np.dtype(object):
            assert got.tolist() == want.tolist(), name
        else:
            assert got.tobytes() == want.tobytes(), name


@pytest.mark.parametrize("model", ["ranker", "ranker_mlp", "photo", "mlp", "multi"])
@pytest.mark.parametrize("profile", [{}, {"graph_optimization": "disable", "mem_pattern": False},
                                     {"intra_op_threads": 2, "cpu_mem_arena": True}])
def test_outputs_byte_identical_to_the_python_package(example_models, model, profile):
    prof = DeviceProfile.from_config(profile)
    ours = ModelSession(model, example_models[model], prof)
    theirs = _python_session(example_models[model], prof)
    assert [(s.name, s.type, s.shape) for s in ours.inputs] == \
        [(a.name, a.type, tuple(a.shape)) for a in theirs.get_inputs()]
    assert [(s.name, s.type) for s in ours.outputs] == [(a.name, a.type) for a in theirs.get_outputs()]
    assert list(ours.providers) == theirs.get_providers()
    rng = np.random.default_rng(sum(map(ord, model)))
    names = [o.name for o in ours.outputs]
    for batch in (1, 7, 100):
        feeds = _random_feeds(ours, rng, batch)
        _assert_identical(ours.run(feeds), theirs.run(names, feeds), names)


_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@pytest.fixture(scope="module")
def fuzz_sessions(example_models) -> dict[str, tuple[ModelSession, ort.InferenceSession]]:
    return {name: (ModelSession(name, example_models[name]), _python_session(example_models[name], DeviceProfile()))
            for name in ("ranker", "ranker_mlp", "photo")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["ranker", "ranker_mlp", "photo"]), batch=st.integers(0, 12),
       palette=st.lists(_FLOATS, min_size=1, max_size=16), seed=st.integers(0, 2**32 - 1),
       strided=st.booleans())
def test_fuzzed_inputs_byte_identical(fuzz_sessions, name, batch, palette, seed, strided):
    """Any values (NaN, infinities, subnormals, huge: drawn by hypothesis, spread over the input),
    any batch size (0 included), views that are not contiguous: the C API path returns exactly what
    the Python package does."""
    ours, theirs = fuzz_sessions[name]
    spec = ours.inputs[0]
    shape = tuple(d if isinstance(d, int) else batch for d in spec.shape)
    x = np.random.default_rng(seed).choice(np.array(palette, dtype=np.float32), size=shape)
    if strided and batch > 1:
        x = np.concatenate([x, x])[::2]  # a strided view: the binding makes it contiguous
    names = [o.name for o in ours.outputs]
    _assert_identical(ours.run({spec.name: x}), theirs.run(names, {spec.name: np.ascontiguousarray(x)}), names)


# ---------------------------------------------------------------- bad inputs reach ORT: typed errors

@pytest.mark.parametrize("feeds", [
    {"x": np.ones((2, 6), np.float64)},                     # wrong dtype
    {"x": np.ones((2, 5), np.float32)},                     # wrong fixed dimension
    {"x": np.ones((6,), np.float32)},                       # wrong rank
    {"x": np.ones((2, 6), np.int64)},
    {"x": np.array([["a"] * 6] * 2, dtype=object)},         # strings for floats
    {"y": np.ones((2, 6), np.float32)},                     # a name that is not an input
])
def test_unchecked_bad_feeds_give_ort_errors_not_crashes(feeds):
    """Past ModelSession's own checks (which catch all of these first), the binding itself turns
    ORT's refusal into OrtError with ORT's message."""
    session = ortapi.Session(mlp_bytes(), DeviceProfile())
    name = next(iter(feeds))
    if name not in session._names:
        session._names[name] = ortapi.ffi.new("char[]", name.encode())
    with pytest.raises(ortapi.OrtError) as info:
        session.run(["y"], feeds, session.run_options())
    assert str(info.value) and info.value.code != 0


def test_error_inside_a_run_is_a_runtime_error_with_orts_message():
    s = ModelSession("reshaper", reshape_bytes())
    with pytest.raises(RuntimeError) as info:
        s.run({"x": np.arange(3, dtype=np.float32)})
    assert "model 'reshaper'" in str(info.value) and "reshape" in str(info.value).lower()


def _corrupt_models() -> list[bytes]:
    good = mlp_bytes()
    rng = np.random.default_rng(5)
    flipped = []
    for _ in range(40):
        b = bytearray(good)
        for i in rng.integers(0, len(b), 8):
            b[i] = int(rng.integers(0, 256))
        flipped.append(bytes(b))
    return [b"\x00", b"not a model at all", good[: len(good) // 2], good[:-3], rng.bytes(4096), *flipped]


def test_corrupt_models_are_bad_input_or_run():
    """Truncated, random and byte-flipped models: each is refused with BadInput naming the model,
    or (a flip ORT cannot notice, in a weight) loads and runs; the process never crashes. Run in a
    child so a crash would fail the test instead of the suite."""
    code = (
        "import numpy as np, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests' / 'ml')!r})\n"
        "from test_ortapi import _corrupt_models\n"
        "from vm.errors import BadInput\n"
        "from vm.ml.models import ModelSession\n"
        "refused = ran = 0\n"
        "for i, m in enumerate(_corrupt_models()):\n"
        "    try:\n"
        "        s = ModelSession(f'm{i}', m)\n"
        "    except BadInput as e:\n"
        "        assert f\"model 'm{i}'\" in str(e) and 'ONNX Runtime cannot load it' in str(e), e\n"
        "        refused += 1\n"
        "        continue\n"
        "    try:\n"
        "        s.run({x.name: np.ones([d if isinstance(d, int) else 2 for d in x.shape], x.dtype)\n"
        "               for x in s.inputs})\n"
        "    except (TypeError, ValueError, RuntimeError):\n"
        "        pass\n"
        "    ran += 1\n"
        "print(refused, ran)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    refused, ran = map(int, proc.stdout.split())
    assert refused >= 5 and refused + ran == len(_corrupt_models())


def test_non_tensor_outputs_are_refused_at_load():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("SequenceConstruct", ["x"], ["seq"])], "seq",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(BadInput, match=r"model 'seq'.*'seq' \(sequence\)"):
        ModelSession("seq", model.SerializeToString())


# ---------------------------------------------------------------- the library itself

def test_library_is_the_packages_and_reports_its_version():
    path = ortapi.library_path()
    assert Path(path).name.startswith("libonnxruntime.so") and Path(path).parent.name == "capi"
    assert ortapi.version() == ort.__version__
    assert ortapi.available_providers() == ort.get_available_providers()


def test_an_older_api_version_is_refused_with_a_typed_error():
    """The library is asked for the C API version this runtime declares; one it does not offer
    (here: one newer than the installed library's) is IncompatibleError naming both."""
    newer = int(ort.__version__.split(".")[1]) + 1
    with pytest.raises(IncompatibleError) as info:
        ortapi._Api(ortapi.library_path(), newer)
    assert f"C API version {newer}" in str(info.value) and ort.__version__ in str(info.value)


def test_a_library_that_is_not_onnxruntime_is_refused(tmp_path):
    import _cffi_backend

    with pytest.raises(IncompatibleError, match="no OrtGetApiBase"):
        ortapi._Api(_cffi_backend.__file__, ortapi.ORT_API_VERSION)
    (tmp_path / "libonnxruntime.so").write_bytes(b"not an ELF file")
    with pytest.raises(IncompatibleError, match="cannot load ONNX Runtime"):
        ortapi._Api(str(tmp_path / "libonnxruntime.so"), ortapi.ORT_API_VERSION)


def test_a_model_session_never_imports_the_python_package(tmp_path):
    (tmp_path / "m.onnx").write_bytes(mlp_bytes())
    code = (
        "import sys, numpy as np\n"
        "from vm.ml.models import ModelSession\n"
        f"s = ModelSession('m', open({str(tmp_path / 'm.onnx')!r}, 'rb').read())\n"
        "assert s.run({'x': np.ones((2, 6), np.float32)})['y'].shape == (2, 3)\n"
        "assert 'onnxruntime' not in sys.modules, sorted(m for m in sys.modules if 'onnx' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
