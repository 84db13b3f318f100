"""from random import _os (a private member of the real module)."""
from random import _os  # POLICY


def entry(inputs):
    return "ESCAPED: " + _os.getcwd()
