"""types.CodeType / types.FunctionType."""
import types  # POLICY


def entry(inputs):
    return "ESCAPED: " + str(types.CodeType)
