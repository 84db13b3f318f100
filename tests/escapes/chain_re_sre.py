"""Module attribute chain: re.sre_compile (the pre-3.11 compiler module)."""
import re


def entry(inputs):
    return "ESCAPED: " + str(re.sre_compile.compile)
