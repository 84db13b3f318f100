"""__match_args__ naming a dunder on a script class: positional patterns then read it."""


class C:
    __match_args__ = ("__class__",)  # POLICY


def entry(inputs):
    match C():
        case C(cls):
            return "ESCAPED: " + str(cls)
    return "no"
