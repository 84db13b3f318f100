"""import builtins (the real module)."""
import builtins  # POLICY


def entry(inputs):
    return "ESCAPED: " + builtins.__import__("os").getcwd()  # POLICY
