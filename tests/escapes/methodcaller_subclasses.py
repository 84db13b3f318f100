"""operator.methodcaller("__subclasses__")."""
import operator


def entry(inputs):
    subs = operator.methodcaller("__subclasses__")(object)
    return f"ESCAPED: {len(subs)}"
