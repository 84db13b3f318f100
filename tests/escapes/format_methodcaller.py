"""operator.methodcaller("format", ...) on a crafted string."""
import operator


def entry(inputs):
    call = operator.methodcaller("format", entry)
    return "ESCAPED: " + call("{0.__globals__}")
