"""Train the session-aware re-ranker on synthetic clickstreams and export it to ONNX.

Generates a catalog and user histories (``clickstream``), cuts re-ranking requests (slates) from
them, computes the reference features (``features_reference``), fits a model, checks it on users
held out from training, and writes into ``out_dir``:

* ``ranker.onnx``: input ``features`` float32 ``(batch, 32)``, output ``scores`` float32 ``(batch,)``
  (click/add-to-cart probability). The feature standardisation is folded into the first layer, so
  the model takes the reference features as they are.
* ``ranker_meta.json``: feature names, the catalog constants the features need, metrics.
* ``golden.json``: a few requests (context events, candidates, ``now``) with the expected feature
  matrix and scores, for checking an edgevm feature script against this reference.

Models: ``logreg`` (default: logistic regression; on these features a small MLP or gradient
boosting does not beat it on held-out users) or ``mlp`` (one hidden ReLU layer). Deterministic from
the seed; runs in a few seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

try:
    from . import clickstream as cs
    from . import features_reference as fr
except ImportError:  # run as a script: python examples/ranking/train.py OUT
    import clickstream as cs  # type: ignore[no-redef]
    import features_reference as fr  # type: ignore[no-redef]

N_USERS = 200
SLATES_PER_USER = 6
TEST_FRACTION = 0.2
NEG_KEEP = 0.3  # the MLP trains on all positives and this share of negatives (bias corrected after)


def build_dataset(seed: int = 0, n_users: int = N_USERS, slates_per_user: int = SLATES_PER_USER
                  ) -> dict[str, Any]:
    """Catalog, constants, and one entry per slate: features, labels, user id, the slate itself."""
    catalog = cs.generate_catalog(seed)
    users = cs.generate_history(catalog, n_users, seed)
    constants = fr.feature_constants(catalog)
    rng = np.random.default_rng([seed, 4])
    slates = []
    for u in users:
        for _ in range(slates_per_user):
            s = cs.make_slate(catalog, u["events"], int(rng.integers(50, 201)), rng)
            if s is None:
                continue
            x = fr.compute_features(s["context"], s["candidates"], s["now"], constants)
            # What a server-side ranker would know: the same features without this session's events.
            before = [e for e in s["context"] if e["ts"] < s["session_start"]]
            x_stale = fr.compute_features(before, s["candidates"], s["now"], constants)
            slates.append({"user_id": u["user_id"], "x": x, "x_stale": x_stale,
                           "y": np.asarray(s["labels"], np.int64), "slate": s})
    return {"catalog": catalog, "constants": constants, "slates": slates, "n_users": n_users}


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _slate_auc(slates: list[dict[str, Any]], score) -> float:
    """Mean AUC within each request that has both clicked and unclicked candidates."""
    vals = [_auc(s["y"], score(s["x"])) for s in slates if 0 < s["y"].sum() < len(s["y"])]
    return float(np.mean(vals)) if vals else float("nan")


# ---------------------------------------------------------------- ONNX export

def _onnx_model(nodes: list, inits: list, d: int, doc: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgevm-examples", doc_string=doc)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export_logreg(w: np.ndarray, b: float) -> bytes:
    """scores = sigmoid(features @ w + b), w: (d,)."""
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["features", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["scores"])]
    inits = [numpy_helper.from_array(w.astype(np.float32), "w"),
             numpy_helper.from_array(np.array(b, np.float32), "b")]
    return _onnx_model(nodes, inits, w.shape[0], "session-aware re-ranker (logistic regression)")


def export_mlp(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: float) -> bytes:
    """scores = sigmoid(relu(features @ w1 + b1) @ w2 + b2), w2: (hidden,)."""
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["features", "w1"], ["h0"]),
             helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["hw"]),
             helper.make_node("Add", ["hw", "b2"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["scores"])]
    inits = [numpy_helper.from_array(w1.astype(np.float32), "w1"),
             numpy_helper.from_array(b1.astype(np.float32), "b1"),
             numpy_helper.from_array(w2.astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(b2, np.float32), "b2")]
    return _onnx_model(nodes, inits, w1.shape[0], "session-aware re-ranker (MLP)")


# ---------------------------------------------------------------- training

def fit(x: np.ndarray, y: np.ndarray, model: str, seed: int) -> tuple[bytes, Any]:
    """Fit on raw features; return (ONNX bytes with the scaler folded in, numpy scoring function)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    mean = x.mean(axis=0).astype(np.float64)
    std = x.std(axis=0).astype(np.float64)
    std[std < 1e-6] = 1.0
    xs = (x - mean) / std
    if model == "logreg":
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(xs, y)
        w = clf.coef_[0] / std
        b = float(clf.intercept_[0] - np.sum(clf.coef_[0] * mean / std))

        def score(feats: np.ndarray) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-(feats.astype(np.float64) @ w + b)))

        return export_logreg(w, b), score
    if model == "mlp":
        rng = np.random.default_rng([seed, 5])
        keep = (y == 1) | (rng.random(len(y)) < NEG_KEEP)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed epoch budget is intended
            clf = MLPClassifier((32,), alpha=1e-3, batch_size=256, max_iter=15, learning_rate_init=3e-3,
                                random_state=seed).fit(xs[keep], y[keep])
        w1 = clf.coefs_[0] / std[:, None]
        b1 = clf.intercepts_[0] - (mean / std) @ clf.coefs_[0]
        w2 = clf.coefs_[1][:, 0]
        b2 = float(clf.intercepts_[1][0] + math.log(NEG_KEEP))  # undo negative subsampling

        def score(feats: np.ndarray) -> np.ndarray:
            h = np.maximum(feats.astype(np.float64) @ w1 + b1, 0.0)
            return 1.0 / (1.0 + np.exp(-(h @ w2 + b2)))

        return export_mlp(w1, b1, w2, b2), score
    raise ValueError(f"model must be 'logreg' or 'mlp', got {model!r}")


def _ort_scores(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(["scores"], {"features": x})[0]


def _jsonable(slate: dict[str, Any], x: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    return {"now": slate["now"], "context": slate["context"], "candidates": slate["candidates"],
            "labels": slate["labels"], "features": x.tolist(), "scores": scores.tolist()}


def main(out_dir: str | Path, seed: int = 0, model: str = "logreg", n_users: int = N_USERS) -> dict[str, Any]:
    """Train, evaluate on held-out users, write ranker.onnx / ranker_meta.json / golden.json."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = build_dataset(seed, n_users)
    n_test = max(1, int(round(n_users * TEST_FRACTION)))
    test_users = set(np.random.default_rng([seed, 6]).permutation(n_users)[:n_test].tolist())
    train = [s for s in data["slates"] if s["user_id"] not in test_users]
    test = [s for s in data["slates"] if s["user_id"] in test_users]
    x_tr = np.concatenate([s["x"] for s in train])
    y_tr = np.concatenate([s["y"] for s in train])
    x_te = np.concatenate([s["x"] for s in test])
    y_te = np.concatenate([s["y"] for s in test])
    t_data = time.perf_counter() - t0

    model_bytes, score = fit(x_tr, y_tr, model, seed)
    onnx_scores = _ort_scores(model_bytes, x_te)
    max_diff = float(np.max(np.abs(onnx_scores - score(x_te))))
    if max_diff > 1e-4:
        raise RuntimeError(f"exported model disagrees with the trained one (max |diff| {max_diff:.2e})")

    # Ablation: the same model trained and tested without the current session's events, i.e. on
    # what a server that computes features in batch would know when the session starts.
    _, score_stale = fit(np.concatenate([s["x_stale"] for s in train]), y_tr, model, seed)
    x_te_stale = np.concatenate([s["x_stale"] for s in test])
    pop = fr.FEATURE_NAMES.index("pop_z")
    metrics = {
        "model": model,
        "train_requests": len(train), "test_requests": len(test),
        "train_rows": int(len(y_tr)), "test_rows": int(len(y_te)),
        "positive_rate": float(y_tr.mean()),
        "test_auc": _auc(y_te, onnx_scores),
        "test_slate_auc": _slate_auc(test, score),
        "test_auc_without_session_events": _auc(y_te, score_stale(x_te_stale)),
        "test_auc_popularity_only": _auc(y_te, x_te[:, pop]),
        "onnx_vs_numpy_max_abs_diff": max_diff,
        "model_bytes": len(model_bytes),
    }
    (out / "ranker.onnx").write_bytes(model_bytes)
    meta = {
        "input": "features", "output": "scores", "d": fr.D, "feature_names": list(fr.FEATURE_NAMES),
        "constants": data["constants"], "seed": seed, "metrics": metrics,
    }
    (out / "ranker_meta.json").write_text(json.dumps(meta, indent=1))
    by_len = sorted(test, key=lambda s: len(s["slate"]["context"]))
    picks = [by_len[int(q * (len(by_len) - 1))] for q in (0.1, 0.5, 0.95)]  # short, typical, long context
    golden = [_jsonable(s["slate"], s["x"], _ort_scores(model_bytes, s["x"])) for s in picks]
    (out / "golden.json").write_text(json.dumps({"constants": data["constants"], "requests": golden}))
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    metrics["seconds_data"] = round(t_data, 2)
    return metrics


def _cli() -> None:
    ap = argparse.ArgumentParser(description="Train the session-aware re-ranker and export ranker.onnx.")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", choices=("logreg", "mlp"), default="logreg")
    ap.add_argument("--users", type=int, default=N_USERS)
    args = ap.parse_args()
    print(json.dumps(main(args.out_dir, args.seed, args.model, args.users), indent=2))


if __name__ == "__main__":
    _cli()
