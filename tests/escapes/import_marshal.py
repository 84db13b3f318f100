"""marshal.loads to make arbitrary code objects."""
import marshal  # POLICY


def entry(inputs):
    return "ESCAPED: " + str(marshal.loads)
