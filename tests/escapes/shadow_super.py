"""Rebind `super` so that the class machinery calls attacker code."""


def super(*args):  # POLICY
    return "ESCAPED: shadowed super"


class A:
    def __init__(self):
        self.v = super()


def entry(inputs):
    return A().v
