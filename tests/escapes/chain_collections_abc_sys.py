"""Module attribute chain: collections.abc.sys."""
import collections.abc


def entry(inputs):
    return "ESCAPED: " + collections.abc.sys.modules["os"].getcwd()
