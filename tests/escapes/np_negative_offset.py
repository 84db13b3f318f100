"""numpy: ndarray(shape, dtype, buffer=..., offset=-64) is accepted and reads (or writes, with a
writable buffer) memory *before* the buffer: an out-of-bounds read/write primitive."""
import numpy as np


def entry(inputs):
    buf = bytearray(64)
    before = np.ndarray((64,), np.uint8, buffer=buf, offset=-64)
    return f"ESCAPED: read {before.size} bytes outside the buffer"
