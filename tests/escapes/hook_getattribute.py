"""__getattribute__ intercepts every attribute read."""


class C:
    def __getattribute__(self, name):  # POLICY
        return "ESCAPED: getattribute hook " + name


def entry(inputs):
    return C().x
