"""functools.wraps(..., updated=("__globals__",)) as a decorator: same gadget, decorator form."""
import functools
import json


@functools.wraps(json.dumps, assigned=(), updated=("__globals__",))
def target():
    pass


def entry(inputs):
    return "ESCAPED: " + codecs.builtins.__name__  # noqa: F821
