"""numpy: ndarray.tofile writes a file."""
import numpy as np


def entry(inputs):
    np.zeros(4).tofile("/tmp/edgevm-escape")  # POLICY
    return "ESCAPED: wrote a file"
