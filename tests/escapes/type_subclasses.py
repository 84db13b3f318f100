"""type(x).__subclasses__()."""


def entry(inputs):
    subs = type(object()).__subclasses__()  # POLICY
    return f"ESCAPED: {len(subs)}"
