"""`import os` in a bundle that also ships pkg/os.py: the name matches a bundle module's suffix."""
import os  # POLICY


def entry(inputs):
    return "ESCAPED: " + os.getcwd()
