"""A fullwidth dunder name passed to getattr as a string (strings are not normalised)."""


def entry(inputs):
    return "ESCAPED: " + str(getattr(1, "__ｃｌａｓｓ__"))  # noqa: B009
