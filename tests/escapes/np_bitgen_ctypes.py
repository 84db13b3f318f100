"""numpy: a bit generator's ctypes/cffi/capsule interfaces (raw state pointers)."""
import numpy as np


def entry(inputs):
    bg = np.random.default_rng(0).bit_generator
    return "ESCAPED: " + str(bg.ctypes) + str(bg.capsule)  # POLICY
