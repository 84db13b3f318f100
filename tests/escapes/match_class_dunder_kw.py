"""A class pattern keyword naming a dunder: case object(__class__=c)."""


def entry(inputs):
    match 1:
        case object(__class__=c):  # POLICY
            return f"ESCAPED: {len(c.__subclasses__())}"  # POLICY
    return "no"
