"""delattr of a dunder on a class (remove a guard-relevant method)."""


class A:
    def __init__(self):
        self.x = 1


def entry(inputs):
    delattr(A, "__init__")
    return "ESCAPED: deleted"
