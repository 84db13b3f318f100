"""__match_args__ = ("format",) on a str subclass: a positional class pattern binds the bound
format method of a crafted string."""
import edge


class S(str):
    __match_args__ = ("format",)  # POLICY


def entry(inputs):
    match S("{0.__globals__[__name__]}"):
        case S(fmt):
            return "ESCAPED: " + fmt(edge.log)
    return "no"
