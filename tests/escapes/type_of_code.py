"""type(f.__code__) (CodeType) without importing types."""


def entry(inputs):
    code_type = type(entry.__code__)  # POLICY
    return "ESCAPED: " + str(code_type)
