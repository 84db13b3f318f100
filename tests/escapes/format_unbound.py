"""str.format as an unbound method."""


def entry(inputs):
    return "ESCAPED: " + str.format("{0.__globals__}", entry)  # POLICY
