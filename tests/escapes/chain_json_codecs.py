"""Module attribute chain: json.codecs.sys (the real json module imports codecs)."""
import json


def entry(inputs):
    return "ESCAPED: " + json.codecs.sys.modules["os"].getcwd()
