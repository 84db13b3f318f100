"""collections.namedtuple writes __match_args__ from field names; an ABC mixin plus register
makes a generator match, and the positional pattern reads gi_frame."""
import abc
import collections


class GenView(collections.namedtuple("GenView0", "gi_frame"), abc.ABC):
    pass


def gen():
    yield 1


def entry(inputs):
    g = gen()
    GenView.register(type(g))
    match g:
        case GenView(frame):
            return "ESCAPED: got a " + type(frame).__name__
    return "no"
