"""Module attribute chain: typing.sys."""
import typing


def entry(inputs):
    return "ESCAPED: " + typing.sys.modules["os"].getcwd()
