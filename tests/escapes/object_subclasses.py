"""object.__subclasses__() on the builtin name."""


def entry(inputs):
    return f"ESCAPED: {len(object.__subclasses__())}"  # POLICY
