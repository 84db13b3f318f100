"""Photo check demo: classify small photos of handwritten digits on device.

The data is scikit-learn's bundled digits dataset (8x8 grey levels 0..16, no download), turned into
small "phone photos": upsampled to 28x28, placed at a random offset in a 32x32 frame, dark ink of a
random colour on light paper of another colour, uneven lighting, sensor noise, stored as uint8 RGB
``(32, 32, 3)`` (height, width, channel), as a camera frame would be.

Preprocessing (what the feature script does with ``edge.ops.image_preprocess``): uint8 HWC ->
float32 CHW, ``(pixel / 255 - MEAN) / STD`` per channel (``preprocess_reference``). The images are
already at the model's size, so no resize is involved. The model (``photo.onnx``) takes float32
``(batch, 3, 32, 32)`` named ``image`` and returns float32 ``(batch, 10)`` class probabilities named
``probs``. Inside the graph: mean over the colour channels (the colours carry no information), then
a one-hidden-layer MLP trained with scikit-learn and exported with ``onnx.helper``.

``main(out_dir)`` writes ``photo.onnx``, ``photo_meta.json`` (preprocessing constants, metrics) and
``samples.json`` (a few test images with their labels and the expected probabilities).
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 32
DIGIT = 28
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
HIDDEN = 64
AUGMENT = 2  # noisy photos generated per training digit


def _upsample(img8: np.ndarray) -> np.ndarray:
    """8x8 -> DIGIT x DIGIT, bilinear (values in [0, 1])."""
    src = np.linspace(0, 7, DIGIT)
    i0 = np.clip(np.floor(src).astype(int), 0, 6)
    f = src - i0
    rows = img8[i0] * (1 - f)[:, None] + img8[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def make_photos(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 8, 8) grey levels 0..16 -> (n, 32, 32, 3) uint8 RGB photos."""
    n = len(digits)
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    for k in range(n):
        ink = np.clip(_upsample(digits[k] / 16.0) * rng.uniform(0.7, 1.0), 0, 1)
        mask = np.zeros((SIZE, SIZE))
        dy, dx = rng.integers(0, SIZE - DIGIT + 1, size=2)
        mask[dy:dy + DIGIT, dx:dx + DIGIT] = ink
        paper = rng.uniform(170, 245, size=3)
        pen = rng.uniform(10, 90, size=3)
        light = 1.0 + rng.uniform(-0.15, 0.15) * (yy - 0.5) + rng.uniform(-0.15, 0.15) * (xx - 0.5)
        rgb = (paper[None, None, :] * (1 - mask[..., None]) + pen[None, None, :] * mask[..., None])
        rgb = rgb * light[..., None] + rng.normal(0, rng.uniform(3, 12), size=(SIZE, SIZE, 3))
        out[k] = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return out


def preprocess_reference(images: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, 3) or (H, W, 3) -> float32 (n, 3, H, W) / (3, H, W): (x/255 - MEAN) / STD."""
    x = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def load_data(seed: int = 0) -> dict[str, np.ndarray]:
    """Photos for train (``AUGMENT`` per digit) and test (one per digit), split by digit sample."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(d.target))
    n_test = len(order) // 5
    test_idx, train_idx = order[:n_test], order[n_test:]
    imgs8 = d.images.astype(np.float64)
    train_src = np.repeat(train_idx, AUGMENT)
    return {
        "x_train": make_photos(imgs8[train_src], rng), "y_train": d.target[train_src],
        "x_test": make_photos(imgs8[test_idx], rng), "y_test": d.target[test_idx],
    }


def export(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> bytes:
    """image (batch, 3, 32, 32) -> channel mean -> flatten -> Gemm/Relu -> Gemm -> Softmax -> probs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["image"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Flatten", ["grey"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("Gemm", ["h", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in
             ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    graph = helper.make_graph(
        nodes, "photo_check",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgevm-examples", doc_string="digit photo check (MLP)")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _grey_flat(x_chw: np.ndarray) -> np.ndarray:
    return x_chw.mean(axis=1).reshape(len(x_chw), -1)


def main(out_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Build the photos, train, export ``photo.onnx`` and report held-out accuracy."""
    import onnxruntime as ort
    from sklearn.neural_network import MLPClassifier

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(seed)
    x_tr = preprocess_reference(data["x_train"])
    x_te = preprocess_reference(data["x_test"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed epoch budget is intended
        clf = MLPClassifier((HIDDEN,), alpha=1e-3, batch_size=64, max_iter=40, learning_rate_init=2e-3,
                            random_state=seed).fit(_grey_flat(x_tr), data["y_train"])
    model_bytes = export(clf.coefs_[0], clf.intercepts_[0], clf.coefs_[1], clf.intercepts_[1])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    probs = sess.run(["probs"], {"image": x_te})[0]
    ref = clf.predict_proba(_grey_flat(x_te))
    max_diff = float(np.abs(probs - ref).max())
    if max_diff > 1e-4:
        raise RuntimeError(f"exported model disagrees with the trained one (max |diff| {max_diff:.2e})")
    pred = probs.argmax(axis=1)
    metrics = {
        "train_images": int(len(x_tr)), "test_images": int(len(x_te)),
        "train_accuracy": float((clf.predict(_grey_flat(x_tr)) == data["y_train"]).mean()),
        "test_accuracy": float((pred == data["y_test"]).mean()),
        "onnx_vs_sklearn_max_abs_diff": max_diff,
        "model_bytes": len(model_bytes),
    }
    (out / "photo.onnx").write_bytes(model_bytes)
    meta = {
        "input": "image", "output": "probs", "layout": "NCHW", "size": [SIZE, SIZE], "channels": 3,
        "source_layout": "HWC uint8 RGB", "scale": 1 / 255, "mean": list(MEAN), "std": list(STD),
        "classes": [str(i) for i in range(10)], "seed": seed, "metrics": metrics,
    }
    (out / "photo_meta.json").write_text(json.dumps(meta, indent=1))
    samples = [{"image_hwc_uint8": data["x_test"][k].tolist(), "label": int(data["y_test"][k]),
                "probs": probs[k].tolist()} for k in range(5)]
    (out / "samples.json").write_text(json.dumps(samples))
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    return metrics


def _cli() -> None:
    ap = argparse.ArgumentParser(description="Train the digit photo check and export photo.onnx.")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(main(args.out_dir, args.seed), indent=2))


if __name__ == "__main__":
    _cli()
