"""type.mro() (a method, not a dunder) to reach object and its subclasses."""


def entry(inputs):
    top = int.mro()[-1]  # POLICY
    return "ESCAPED: " + top.__name__
