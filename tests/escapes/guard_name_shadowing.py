"""Parameters named like the guards and internals (positional-only too): getattr, __import__,
__builtins__, super. They are plain locals; the sandbox's getattr still guards."""


def probe(getattr=getattr, /, __builtins__=None, __import__=None, super=None):
    return getattr(probe, "__glo" + "bals__")


def entry(inputs):
    return "ESCAPED: " + str(probe())
