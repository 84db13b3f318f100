"""re wrapper: Match.re is the engine's raw compiled pattern, whose methods take no deadline;
a catastrophic pattern then holds the worker past the call's deadline."""
import re


def entry(inputs):
    raw = re.compile(r"(a|aa)+$").match("a").re
    raw.search("a" * inputs["n"] + "b")
    return "ESCAPED: raw regex finished"
