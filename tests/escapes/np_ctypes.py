"""numpy: ndarray.ctypes.data is a raw pointer."""
import numpy as np


def entry(inputs):
    return f"ESCAPED: {np.zeros(4).ctypes.data}"  # POLICY
