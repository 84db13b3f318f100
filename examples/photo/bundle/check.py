"""Photo check before upload: is this a legible digit, and which one?

The app sends a camera frame (uint8 RGB, height x width x 3, any size); the script resizes and
normalises it with the native image operator and classifies it with the bundled model.
"""
import edge
import numpy as np

SIZE = 32
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
MIN_CONFIDENCE = 0.6


def check(inputs: dict):
    height, width = int(inputs["height"]), int(inputs["width"])
    pixels = np.array(bytearray(inputs["pixels"]), dtype=np.uint8)
    if pixels.size != height * width * 3:
        raise ValueError(f"expected {height * width * 3} bytes of RGB, got {pixels.size}")
    frame = pixels.reshape(height, width, 3)
    x = edge.ops.image_preprocess(frame, SIZE, SIZE, MEAN, STD)
    probs = edge.model("photo").run({"image": x.reshape(1, 3, SIZE, SIZE)})["probs"][0]
    label = int(np.argmax(probs))
    confidence = float(probs[label])
    return {"label": label, "confidence": round(confidence, 6), "accept": confidence >= MIN_CONFIDENCE}
