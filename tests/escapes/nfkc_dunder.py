"""A fullwidth attribute that NFKC-normalises to __class__."""


def entry(inputs):
    return "ESCAPED: " + str((1).__ｃｌａｓｓ__.__ｍｒｏ__)  # POLICY
