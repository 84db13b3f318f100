"""operator.attrgetter("__globals__")."""
import operator


def entry(inputs):
    return "ESCAPED: " + str(operator.attrgetter("__globals__")(entry))
