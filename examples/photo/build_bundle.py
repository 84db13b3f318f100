"""Build the photo-check example bundle: train the classifier, pack it with the check script, and
write a sample request (a test photo scaled up to a 48x48 camera frame, so the script's resize
runs)."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from examples.photo import train  # noqa: E402
from vm.tools.packer import pack  # noqa: E402

FRAME = 48


def camera_frame(image_hwc: np.ndarray, size: int = FRAME) -> np.ndarray:
    """Nearest-neighbour upscale of a (32, 32, 3) photo to (size, size, 3)."""
    idx = (np.arange(size) * image_hwc.shape[0]) // size
    return image_hwc[idx][:, idx]


def request_for(sample: dict[str, Any]) -> dict[str, Any]:
    frame = camera_frame(np.asarray(sample["image_hwc_uint8"], dtype=np.uint8))
    return {"height": FRAME, "width": FRAME, "pixels": frame.tobytes()}


def main(out_dir: str | Path, keys_dir: str | Path, targets: list[str] | None = None) -> dict[str, Any]:
    out = Path(out_dir)
    work = out / "photo-build"
    metrics = train.main(work)
    src = out / "photo-src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(HERE / "bundle", src)
    shutil.copy(work / "photo.onnx", src / "photo.onnx")
    result = pack(src, keys_dir, out / "photo-check.evb", targets=targets)
    samples = json.loads((work / "samples.json").read_text())
    (out / "photo-samples.json").write_text(json.dumps(
        [{"label": s["label"], "height": FRAME, "width": FRAME,
          "pixels": list(request_for(s)["pixels"])} for s in samples]))
    return {"bundle": str(result.path), "bytes": result.size, "model": metrics}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--keys", required=True)
    ap.add_argument("--target", action="append")
    args = ap.parse_args()
    print(json.dumps(main(args.out_dir, args.keys, args.target), indent=2))
