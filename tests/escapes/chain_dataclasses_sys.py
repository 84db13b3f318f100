"""Module attribute chain: dataclasses.sys."""
import dataclasses


def entry(inputs):
    return "ESCAPED: " + dataclasses.sys.modules["os"].getcwd()
