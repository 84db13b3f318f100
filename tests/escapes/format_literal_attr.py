"""A literal format string whose field walks attributes."""


def entry(inputs):
    text = "{0.__class__.__base__.__subclasses__}".format(1)  # noqa: UP030, UP032  # POLICY
    return "ESCAPED: " + text
