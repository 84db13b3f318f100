"""hasattr as an oracle for dunders (probing what is reachable)."""


def entry(inputs):
    if hasattr(entry, "__globals__"):
        return "ESCAPED: probed"
    return "no"
