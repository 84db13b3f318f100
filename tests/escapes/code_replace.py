"""f.__code__.replace(...) then install it."""


def entry(inputs):
    code = entry.__code__.replace(co_names=("open",))  # POLICY
    return "ESCAPED: " + str(code)
