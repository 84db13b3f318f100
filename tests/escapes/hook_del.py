"""__del__ runs at garbage collection, outside the call that created the object."""


class C:
    def __del__(self):  # POLICY
        pass


def entry(inputs):
    C()
    return "ESCAPED: __del__ defined"
