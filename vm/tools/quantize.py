"""Pack-time model quantisation with a size / accuracy / latency report (server side).

``quantize_model(model_bytes, mode)`` converts an ONNX model to one of

* ``"fp32"``: unchanged (the report still measures it),
* ``"fp16"``: float16 weights and compute, float32 inputs and outputs kept
  (``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``),
* ``"uint8"``: ONNX Runtime dynamic quantisation (``quantize_dynamic``): int8 weights
  (``weight_type="uint8"`` for uint8 weights), uint8 activations quantised at run time,

and returns the new bytes with a report: sizes, the largest and mean absolute output difference
against the fp32 model on sample inputs, and the median CPU latency of both (one intra-op thread,
the device default). ``quantize_table`` gives all three modes: the fp32/fp16/uint8 trade-off table.

This runs on the server: ``onnx`` is a server-side extra (imported lazily), and ``quantize_dynamic``
works on files, so it uses a private temporary directory that is always removed.
"""
from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vm.errors import BadInput
from vm.ml.models import DeviceProfile, ModelSession

__all__ = ["MODES", "format_table", "quantize_model", "quantize_table", "sample_inputs_for"]

MODES = ("fp32", "fp16", "uint8")
REPORT_KEYS = ("mode", "size_before", "size_after", "max_abs_diff", "mean_abs_diff",
               "latency_before_ms", "latency_after_ms")
_BATCH = 8  # a symbolic leading (batch) dimension in generated sample inputs; other symbolic dims are 1
_RUNS = 20
_BUDGET_S = 1.0


def _session(name: str, model_bytes: bytes) -> ModelSession:
    return ModelSession(name, model_bytes, DeviceProfile())


def sample_inputs_for(model_bytes: bytes, *, batch: int = _BATCH, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs that fit the model's signature (symbolic leading dim = ``batch``, others 1)."""
    return _random_feeds(_session("model", model_bytes), batch, seed)


def _random_feeds(sess: ModelSession, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in sess.inputs:
        if spec.shape is None or spec.dtype is None:
            raise BadInput(f"input {spec.name!r} ({spec.type}) has no fixed rank or is not a tensor; "
                           "pass sample_inputs")
        shape = tuple(d if isinstance(d, int) else (batch if axis == 0 else 1)
                      for axis, d in enumerate(spec.shape))
        dt = spec.dtype
        if dt.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            feeds[spec.name] = rng.integers(0, 10, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            feeds[spec.name] = np.full(shape, "a", dtype=object)
    return feeds


def _median_ms(sess: ModelSession, feeds: Mapping[str, np.ndarray]) -> float:
    for _ in range(2):
        sess.run(feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < _RUNS and (len(times) < 3 or time.perf_counter() - start < _BUDGET_S):
        t0 = time.perf_counter()
        sess.run(feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


@dataclass
class _Baseline:
    size: int
    feeds: dict[str, np.ndarray]
    outputs: dict[str, Any]
    latency_ms: float


def _baseline(model_bytes: bytes, sample_inputs: Mapping[str, np.ndarray] | None) -> _Baseline:
    if not isinstance(model_bytes, bytes | bytearray):
        raise BadInput(f"model must be bytes, got {type(model_bytes).__name__}")
    sess = _session("fp32", bytes(model_bytes))
    if sample_inputs is None:
        feeds = _random_feeds(sess, _BATCH, 0)
    else:
        feeds = dict(sample_inputs)
        try:
            sess.check_feeds(feeds)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"sample_inputs do not fit the model: {exc}") from None
    return _Baseline(len(model_bytes), feeds, sess.run(feeds), _median_ms(sess, feeds))


def _diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[float, float]:
    diffs: list[np.ndarray] = []
    for name, a in before.items():
        b = after.get(name)
        if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
            continue
        if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
            continue
        if a.shape != b.shape:
            raise BadInput(f"output {name!r} changed shape from {a.shape} to {b.shape} after quantisation")
        diffs.append(np.abs(a.astype(np.float64) - b.astype(np.float64)).ravel())
    if not diffs:
        return 0.0, 0.0
    d = np.concatenate(diffs)
    if d.size == 0:
        return 0.0, 0.0
    return float(d.max()), float(d.mean())


def _load_onnx(model_bytes: bytes) -> Any:
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the install
        raise BadInput("quantisation needs the 'onnx' package (pip install edgevm[server])") from None
    try:
        return onnx.load_from_string(bytes(model_bytes))
    except Exception as exc:
        raise BadInput(f"not an ONNX model: {exc}") from None


def _to_fp16(model_bytes: bytes) -> bytes:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = _load_onnx(model_bytes)
    try:
        converted = convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:
        raise BadInput(f"fp16 conversion failed: {exc}") from None
    return converted.SerializeToString()


def _drop_preprocess_hint(record: logging.LogRecord) -> bool:
    """Drop quantize_dynamic's generic 'consider pre-processing' hint (it logs on the root logger)."""
    return not str(record.msg).startswith("Please consider to run pre-processing")


def _to_uint8(model_bytes: bytes, weight_type: str) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _load_onnx(model_bytes)
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[weight_type]
    with tempfile.TemporaryDirectory(prefix="edgevm-quant-") as tmp:
        os.chmod(tmp, 0o700)
        out = os.path.join(tmp, "model.uint8.onnx")
        root = logging.getLogger()
        root.addFilter(_drop_preprocess_hint)
        try:
            quantize_dynamic(model, out, weight_type=qtype)
        except Exception as exc:
            raise BadInput(f"dynamic quantisation failed: {exc}") from None
        finally:
            root.removeFilter(_drop_preprocess_hint)
        with open(out, "rb") as f:
            return f.read()


def _convert(model_bytes: bytes, mode: str, weight_type: str) -> bytes:
    if mode == "fp32":
        return bytes(model_bytes)
    if mode == "fp16":
        return _to_fp16(model_bytes)
    return _to_uint8(model_bytes, weight_type)


def _check_mode(mode: str, weight_type: str) -> None:
    if mode not in MODES:
        raise BadInput(f"quantisation mode must be one of {', '.join(MODES)}, got {mode!r}")
    if weight_type not in ("int8", "uint8"):
        raise BadInput(f"weight_type must be 'int8' or 'uint8', got {weight_type!r}")


def _quantize(model_bytes: bytes, mode: str, base: _Baseline, weight_type: str) -> tuple[bytes, dict]:
    new = _convert(model_bytes, mode, weight_type)
    if mode == "fp32":
        after, latency = base.outputs, base.latency_ms
    else:
        try:
            sess = _session(mode, new)
        except BadInput as exc:
            raise BadInput(f"the {mode} model does not load: {exc}") from None
        after = sess.run(base.feeds)
        latency = _median_ms(sess, base.feeds)
    max_d, mean_d = _diff(base.outputs, after)
    report = {
        "mode": mode,
        "size_before": base.size,
        "size_after": len(new),
        "max_abs_diff": max_d,
        "mean_abs_diff": mean_d,
        "latency_before_ms": base.latency_ms,
        "latency_after_ms": latency,
    }
    return new, report


def quantize_model(model_bytes: bytes, mode: str, sample_inputs: dict[str, np.ndarray] | None = None,
                   *, weight_type: str = "int8") -> tuple[bytes, dict]:
    """Convert ``model_bytes`` to ``mode`` (``fp32|fp16|uint8``); return the new bytes and a report.

    Without ``sample_inputs``, random inputs are generated from the model's signature. The report
    has ``mode, size_before, size_after, max_abs_diff, mean_abs_diff, latency_before_ms,
    latency_after_ms`` (median CPU latency, one intra-op thread). ``weight_type`` (``int8`` or
    ``uint8``) applies to ``uint8`` mode. Raises ``BadInput`` for a bad model, mode or sample input.
    """
    _check_mode(mode, weight_type)
    base = _baseline(model_bytes, sample_inputs)
    return _quantize(model_bytes, mode, base, weight_type)


def quantize_table(model_bytes: bytes, sample_inputs: dict[str, np.ndarray] | None = None,
                   *, weight_type: str = "int8") -> list[dict]:
    """One report per mode (fp32, fp16, uint8) against the same fp32 baseline and inputs."""
    _check_mode("fp32", weight_type)
    base = _baseline(model_bytes, sample_inputs)
    return [_quantize(model_bytes, mode, base, weight_type)[1] for mode in MODES]


def format_table(rows: list[dict]) -> str:
    """The table as aligned text (for the CLI and logs)."""
    head = ("mode", "size", "ratio", "max|diff|", "mean|diff|", "latency ms", "vs fp32")
    lines = [head]
    for r in rows:
        lines.append((
            r["mode"], f"{r['size_after']:,}", f"{r['size_after'] / max(r['size_before'], 1):.2f}",
            f"{r['max_abs_diff']:.2e}", f"{r['mean_abs_diff']:.2e}", f"{r['latency_after_ms']:.3f}",
            f"{r['latency_after_ms'] / max(r['latency_before_ms'], 1e-9):.2f}x",
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in lines)
