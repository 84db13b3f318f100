"""The edge module's own __getattr__ (a runtime closure) and the ops module's private members."""
import edge


def entry(inputs):
    return "ESCAPED: " + str(edge.__getattr__("ops")._lib)  # POLICY
