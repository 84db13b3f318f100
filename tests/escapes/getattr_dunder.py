"""getattr with a dunder name built at run time."""


def entry(inputs):
    name = "__glo" + "bals__"
    return "ESCAPED: " + str(getattr(entry, name))
