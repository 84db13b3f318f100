"""functools.partial(getattr, obj, "__globals__")."""
import functools


def entry(inputs):
    return "ESCAPED: " + str(functools.partial(getattr, entry, "__globals__")())
