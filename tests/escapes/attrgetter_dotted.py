"""operator.attrgetter with a dotted path whose second part is a dunder."""
import operator


def entry(inputs):
    return "ESCAPED: " + str(operator.attrgetter("real.__class__")(1))
