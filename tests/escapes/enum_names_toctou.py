"""The enum wrapper iterates `names` to check them, then Enum iterates again: an iterable that
answers differently the second time smuggles a dunder member past the check."""
import enum


class Names:
    def __init__(self):
        self.calls = 0

    def __iter__(self):
        self.calls += 1
        if self.calls == 1:
            return iter([("a", 1)])
        return iter([("a", 1), ("__getattr__", hook)])


def hook(self, name):
    return "ESCAPED: enum hook " + name


def entry(inputs):
    E = enum.Enum("E", Names())
    return E.a.anything
