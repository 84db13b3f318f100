"""inspect.currentframe()."""
import inspect  # POLICY


def entry(inputs):
    return "ESCAPED: " + str(inspect.currentframe().f_back)  # POLICY
