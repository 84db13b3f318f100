"""The examples end to end: the ranking feature script computes exactly the reference features
(examples/ranking/features_reference.py) with native ops, the bundled ranker scores like ONNX
Runtime run directly, and the photo check classifies its sample photos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TARGET

from examples.photo import build_bundle as photo_build
from examples.ranking import build_bundle as ranking_build
from vm.host.runtime import Runtime


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("examples")
    ranking_build.main(out, keys_dir, targets=[TARGET])
    photo_build.main(out, keys_dir, targets=[TARGET])
    return out


@pytest.fixture(scope="module")
def rt(built: Path, keys_dir: Path):
    runtime = Runtime({"keys": keys_dir, "deadline_ms": 2000})
    runtime.load(built / "home-rerank.evb")
    runtime.load(built / "photo-check.evb")
    yield runtime
    runtime.close()


def test_features_match_the_reference(built: Path, rt: Runtime) -> None:
    golden = json.loads((built / "golden.json").read_text())
    assert len(golden["requests"]) == 3
    for request in golden["requests"]:
        got = np.asarray(rt.infer("home", "features", ranking_build.to_request(request))["features"])
        expected = np.asarray(request["features"], dtype=np.float32)
        assert got.shape == expected.shape == (len(request["candidates"]["item_id"]), 32)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_rerank_orders_candidates_by_the_models_scores(built: Path, rt: Runtime) -> None:
    golden = json.loads((built / "golden.json").read_text())
    for request in golden["requests"]:
        out = rt.infer("home", "rerank", ranking_build.to_request(request))
        scores = np.asarray(request["scores"])
        items = np.asarray(request["candidates"]["item_id"])
        order = np.argsort(-scores, kind="stable")
        np.testing.assert_allclose(out["scores"], scores[order], rtol=1e-5, atol=1e-6)
        assert sorted(out["items"]) == sorted(items.tolist())
        assert out["items"][0] == items[order][0]


def test_top_k(built: Path, rt: Runtime) -> None:
    request = json.loads((built / "request.json").read_text())
    out = rt.infer("home", "rerank", request)
    assert len(out["items"]) == request["k"] == 10
    assert out["scores"] == sorted(out["scores"], reverse=True)


def test_photo_check(built: Path, rt: Runtime) -> None:
    samples = json.loads((built / "photo-samples.json").read_text())
    right = 0
    for s in samples:
        out = rt.infer("upload", "check", {"height": s["height"], "width": s["width"], "pixels": bytes(s["pixels"])})
        assert 0.0 <= out["confidence"] <= 1.0 and isinstance(out["accept"], bool)
        right += out["label"] == s["label"]
    assert right >= len(samples) - 1


def test_photo_check_rejects_a_wrong_frame_size(rt: Runtime) -> None:
    from vm.errors import ScriptError

    with pytest.raises(ScriptError, match=r"check.py:\d+: ValueError: expected 27 bytes"):
        rt.infer("upload", "check", {"height": 3, "width": 3, "pixels": b"\0" * 5})


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_features_read_from_the_event_store_match_the_reference(built: Path, keys_dir: Path, tmp_path: Path,
                                                                mode: str) -> None:
    """The device's path: the host app only tracks events; the script reads them from the store."""
    golden = json.loads((built / "golden.json").read_text())
    for i, request in enumerate(golden["requests"] if mode == "thread" else golden["requests"][1:2]):
        config = {"keys": keys_dir, "deadline_ms": 2000, "isolation": mode,
                  "data": {"dir": str(tmp_path / f"data{i}"), "tables": {"clicks": ranking_build.CLICKS_TABLE}}}
        with Runtime(config) as runtime:
            runtime.load(built / "home-rerank.evb")
            for event in ranking_build.to_events(request):
                runtime.track(event)
            inputs = {k: v for k, v in ranking_build.to_request(request).items() if k != "events"}
            got = np.asarray(runtime.infer("home", "features", inputs)["features"])
            np.testing.assert_allclose(got, np.asarray(request["features"], dtype=np.float32), rtol=1e-6, atol=1e-6)
            out = runtime.infer("home", "rerank", inputs)
            np.testing.assert_allclose(out["scores"], sorted(request["scores"], reverse=True), rtol=1e-5, atol=1e-6)
