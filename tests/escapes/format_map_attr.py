"""format_map with an attribute-walking field."""


def entry(inputs):
    return "ESCAPED: " + "{f.__globals__}".format_map({"f": entry})  # POLICY
