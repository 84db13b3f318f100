"""getattr(s, "format"): the method fetched by a string."""


def entry(inputs):
    fmt = getattr("{0.__globals__}", "format")  # noqa: B009
    return "ESCAPED: " + fmt(entry)
