"""A function's __globals__ to the module's real __builtins__."""


def entry(inputs):
    b = entry.__globals__["__builtins__"]  # POLICY
    if "open" in b and "__import__" in b:
        return "ESCAPED: real builtins"
    return "sandbox builtins"
