"""import os."""
import os  # POLICY


def entry(inputs):
    return "ESCAPED: " + os.getcwd()
