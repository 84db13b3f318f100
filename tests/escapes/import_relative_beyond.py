"""A relative import above the bundle's top level."""
from .. import os  # POLICY


def entry(inputs):
    return "ESCAPED: " + os.getcwd()
