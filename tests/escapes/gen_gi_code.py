"""A generator's gi_code, to rebuild it with other names (code.replace)."""


def gen():
    yield 1


def entry(inputs):
    code = gen().gi_code  # POLICY
    code = code.replace(co_names=("open",))
    return "ESCAPED: " + str(code.co_names)  # POLICY
