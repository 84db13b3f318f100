"""Control for the regex holes: the vetted re wrapper stops a catastrophic pattern at the deadline."""
import re


def entry(inputs):
    re.search(r"(a|aa)+$", "a" * inputs["n"] + "b")
    return "ESCAPED: wrapped regex finished"
