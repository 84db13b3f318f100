"""numpy: np.load(allow_pickle=True) / np.lib.stride_tricks.as_strided (left out of slim numpy)."""
import numpy as np


def entry(inputs):
    return "ESCAPED: " + str(np.lib.stride_tricks.as_strided) + str(np.load)
