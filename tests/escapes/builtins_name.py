"""Read __builtins__ by name and pull __import__ out of it."""


def entry(inputs):
    b = __builtins__  # POLICY
    imp = b["__import__"] if isinstance(b, dict) else b.__import__
    return "ESCAPED: " + imp("os").getcwd()
