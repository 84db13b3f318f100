"""importlib.import_module."""
import importlib  # POLICY


def entry(inputs):
    return "ESCAPED: " + importlib.import_module("os").getcwd()
