"""ONNX model sessions: the inference kernel scripts call.

A bundle carries its models as bytes, decrypted in memory. ``load_models`` turns them into
``ModelSession`` objects once, when the bundle loads (never on the first request), using the
``DeviceProfile`` from the runtime config, through ONNX Runtime's C API (``vm.ml.ortapi``: the
library the onnxruntime package ships, without importing the Python package). Models are handed to
ONNX Runtime as bytes: no plaintext
model is ever written to disk (no temp file, no ``optimized_model_filepath``, no profiling file),
and the session keeps no reference to the plaintext bytes once it is built.

``ModelSession.run`` checks input names, dtypes and shapes before calling ONNX Runtime, so that a
script's mistake reads as a clear ``ValueError``/``TypeError`` in the script's own error report. It
honours the deadline of the guarded call it runs in (``vm.execution.watchdog``): ONNX Runtime's
``RunOptionsSetTerminate`` is called from the watchdog thread when the deadline passes, and the
aborted run surfaces as ``vm.errors.Timeout``.

ONNX Runtime is loaded lazily (at the first session), so a bundle without models never pays for it.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vm.errors import BadInput, IncompatibleError, Timeout
from vm.ml.profile import DeviceProfile

__all__ = ["DeviceProfile", "ModelSession", "TensorSpec", "load_models", "ONNX_TO_NUMPY"]

# ONNX Runtime's type strings for tensors -> numpy dtypes.
ONNX_TO_NUMPY: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}

@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: name, ONNX element type, shape (ints fixed, str/None free)."""

    name: str
    type: str
    shape: tuple[int | str | None, ...] | None

    @property
    def dtype(self) -> np.dtype | None:
        """The numpy dtype for a tensor type, None for non-tensor types (sequences, maps)."""
        return ONNX_TO_NUMPY.get(self.type)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for ``edgevm inspect``: dtype name and shape (free dims as names or None)."""
        dt = self.dtype
        return {
            "name": self.name,
            "type": self.type,
            "dtype": ("str" if dt == np.dtype(object) else dt.name) if dt is not None else None,
            "shape": list(self.shape) if self.shape is not None else None,
        }


def _spec(arg: Any) -> TensorSpec:
    shape = arg.shape
    dims: tuple[int | str | None, ...] | None
    if shape is None:
        dims = None
    else:
        dims = tuple(d if isinstance(d, int | str) or d is None else None for d in shape)
        # A dim of size <= 0 reported as int (rare) is not a usable constraint.
        dims = tuple(None if isinstance(d, int) and d <= 0 else d for d in dims)
    return TensorSpec(arg.name, arg.type, dims)


def _fmt_shape(shape: Sequence[int | str | None]) -> str:
    inner = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _current_context() -> Any:
    """The guarded call on this thread (``vm.guard.context.current()``), or None.

    A guarded call can only exist once ``vm.guard.context`` was imported, so it is looked up in
    ``sys.modules`` rather than imported here: models stay usable (and cheap) without it.
    """
    ctx = sys.modules.get("vm.guard.context")
    return ctx.current() if ctx is not None else None


class ModelSession:
    """One loaded model: an ONNX Runtime session created from in-memory bytes.

    ``run`` may be called from several threads at once (ONNX Runtime sessions are thread-safe for
    ``run``; this class holds no mutable state after construction).
    """

    def __init__(self, name: str, model_bytes: bytes, profile: DeviceProfile | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise BadInput(f"model name must be a non-empty string, got {name!r}")
        if not isinstance(model_bytes, bytes | bytearray | memoryview):
            raise BadInput(f"model {name!r}: expected the model as bytes, got {type(model_bytes).__name__}")
        if len(model_bytes) == 0:
            raise BadInput(f"model {name!r}: model bytes are empty")
        try:
            from vm.ml import ortapi
        except ImportError as exc:
            raise IncompatibleError(f"model {name!r}: this device has no ONNX Runtime binding ({exc}), which "
                                    f"bundles with models need") from None

        self.name = name
        self.profile = profile if profile is not None else DeviceProfile()
        self.size = len(model_bytes)
        try:
            self._session = ortapi.Session(model_bytes, self.profile)
        except IncompatibleError as exc:
            raise IncompatibleError(f"model {name!r}: {exc.message}") from None
        except ortapi.OrtError as exc:
            raise BadInput(f"model {name!r}: ONNX Runtime cannot load it: {exc}") from None
        self.inputs: tuple[TensorSpec, ...] = tuple(_spec(a) for a in self._session.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(a) for a in self._session.outputs)
        self.providers: tuple[str, ...] = tuple(self._session.providers)
        self._inputs_by_name = {s.name: s for s in self.inputs}
        self._output_names = [s.name for s in self.outputs]
        self._ort_error = ortapi.OrtError

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}:{s.to_dict()['dtype']}{_fmt_shape(s.shape or ())}" for s in self.inputs)
        outs = ", ".join(s.name for s in self.outputs)
        return f"<ModelSession {self.name!r} ({ins}) -> ({outs})>"

    def signature(self) -> dict[str, Any]:
        """Inputs, outputs, providers and size as a plain mapping (for ``edgevm inspect``)."""
        return {
            "name": self.name,
            "size": self.size,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "providers": list(self.providers),
        }

    def check_feeds(self, feeds: Mapping[str, Any]) -> None:
        """Raise ``ValueError``/``TypeError`` if ``feeds`` do not match the model's inputs."""
        if not isinstance(feeds, Mapping):
            raise TypeError(f"model {self.name!r}: feeds must be a dict of input name -> numpy array, "
                            f"got {type(feeds).__name__}")
        expected = self._inputs_by_name
        unknown = [k for k in feeds if k not in expected]
        if unknown:
            raise ValueError(f"model {self.name!r}: unknown input(s) {unknown}; "
                             f"the model's inputs are {list(expected)}")
        missing = [k for k in expected if k not in feeds]
        if missing:
            raise ValueError(f"model {self.name!r}: missing input(s) {missing}; "
                             f"the model's inputs are {list(expected)}")
        for key, spec in expected.items():
            value = feeds[key]
            if not isinstance(value, np.ndarray):
                raise TypeError(f"model {self.name!r}: input {key!r} must be a numpy array, "
                                f"got {type(value).__name__}")
            want = spec.dtype
            if want is not None:
                if want == np.dtype(object):
                    ok = value.dtype.kind in "UO"
                    want_name = "str"
                else:
                    ok = value.dtype == want
                    want_name = want.name
                if not ok:
                    raise TypeError(f"model {self.name!r}: input {key!r} expects dtype {want_name}, "
                                    f"got {value.dtype.name}")
            if spec.shape is not None:
                if value.ndim != len(spec.shape):
                    raise ValueError(f"model {self.name!r}: input {key!r} expects rank {len(spec.shape)} "
                                     f"shape {_fmt_shape(spec.shape)}, got rank {value.ndim} "
                                     f"shape {_fmt_shape(value.shape)}")
                for axis, (dim, got) in enumerate(zip(spec.shape, value.shape, strict=True)):
                    if isinstance(dim, int) and dim != got:
                        raise ValueError(f"model {self.name!r}: input {key!r} expects shape "
                                         f"{_fmt_shape(spec.shape)}, got {_fmt_shape(value.shape)} "
                                         f"(axis {axis} must be {dim})")

    def run(self, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model on ``feeds``; return ``{output name: array}`` for ``outputs`` (default all).

        Checks names, dtypes (exact) and shapes (rank and fixed dims) first. Inside a guarded call
        the run is aborted when the call's deadline passes and ``vm.errors.Timeout`` is raised; a
        deadline already passed raises ``Timeout`` without running.
        """
        self.check_feeds(feeds)
        if outputs is None:
            names = self._output_names
        else:
            if isinstance(outputs, str) or not isinstance(outputs, Sequence):
                raise TypeError(f"model {self.name!r}: outputs must be a list of output names, "
                                f"got {outputs!r}")
            bad = [o for o in outputs if o not in self._output_names]
            if bad:
                raise ValueError(f"model {self.name!r}: unknown output(s) {bad}; "
                                 f"the model's outputs are {self._output_names}")
            names = list(outputs)
        ctx = _current_context()
        if ctx is not None and ctx.remaining() <= 0:
            raise Timeout(f"model {self.name!r}: the call's deadline passed before the model ran")
        ro = self._session.run_options()  # logs nothing: an aborted run is reported as Timeout
        token = ctx.add_cancel(ro.terminate) if ctx is not None else None
        try:
            result = self._session.run(names, {k: feeds[k] for k in self._inputs_by_name}, ro)
        except self._ort_error as exc:
            if ro.terminated:
                raise Timeout(f"model {self.name!r}: run aborted at the call's deadline") from None
            raise RuntimeError(f"model {self.name!r}: {exc}") from None
        finally:
            if token is not None:
                ctx.remove_cancel(token)
        return dict(zip(names, result, strict=True))


def load_models(models: Mapping[str, bytes], profile: DeviceProfile | None = None) -> dict[str, ModelSession]:
    """Create a session for every model of a bundle (at load time). A bad model raises ``BadInput``
    naming it."""
    if not isinstance(models, Mapping):
        raise BadInput(f"models must be a mapping of name -> bytes, got {type(models).__name__}")
    profile = profile if profile is not None else DeviceProfile()
    return {name: ModelSession(name, data, profile) for name, data in models.items()}
