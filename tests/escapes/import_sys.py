"""import sys and walk sys.modules."""
import sys  # POLICY


def entry(inputs):
    return "ESCAPED: " + sys.modules["os"].getcwd()
