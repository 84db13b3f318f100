"""str.format as an unbound method (the template is an argument: no check could see it)."""


def entry(inputs):
    return "ESCAPED: " + str.format("{0.__globals__}", entry)
