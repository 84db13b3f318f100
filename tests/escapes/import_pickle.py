"""pickle.loads of a crafted payload."""
import pickle  # POLICY


def entry(inputs):
    return "ESCAPED: " + str(pickle.loads(b"cos\ngetcwd\n(tR."))
