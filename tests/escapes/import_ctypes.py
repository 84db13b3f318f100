"""ctypes for raw memory."""
import ctypes  # POLICY


def entry(inputs):
    return "ESCAPED: " + str(ctypes.pythonapi)
