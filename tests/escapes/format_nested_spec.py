"""An attribute walk hidden in a nested format spec."""


class x:  # noqa: N801 - its name is the format spec the walk produces
    pass


def entry(inputs):
    return "ESCAPED: " + "{0:{1.__class__.__name__}}".format(255, x())  # POLICY
