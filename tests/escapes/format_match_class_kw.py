"""A class pattern keyword fetches str.format of a crafted string (match looks attributes up by a
constant tuple, which is checked for '_' and introspection names but not for 'format')."""
import edge


def entry(inputs):
    match "{0.__globals__[__name__]}":
        case str(format=fmt):  # POLICY
            return "ESCAPED: " + fmt(edge.log)
    return "no"
