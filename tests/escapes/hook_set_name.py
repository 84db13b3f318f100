"""__set_name__ runs at class creation."""


class D:
    def __set_name__(self, owner, name):  # POLICY
        owner.hooked = "ESCAPED: set_name ran"


class C:
    d = D()


def entry(inputs):
    return C.hooked
