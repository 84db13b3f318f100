"""Module attribute chain: re.enum.sys (the real re module imports enum, which imports sys)."""
import re


def entry(inputs):
    return "ESCAPED: " + re.enum.sys.modules["os"].getcwd()
