"""__bases__ walk from bool to object."""


def entry(inputs):
    top = bool.__bases__[0].__bases__[0]  # POLICY
    return f"ESCAPED: {len(top.__subclasses__())}"
