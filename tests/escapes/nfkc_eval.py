"""A fullwidth identifier that NFKC-normalises to eval."""


def entry(inputs):
    return "ESCAPED: " + str(ｅｖａｌ("1 + 1"))  # POLICY
