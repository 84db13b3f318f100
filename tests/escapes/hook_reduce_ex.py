"""__reduce_ex__ runs inside copy.copy (library code calls the hook)."""
import copy


class C:
    def __reduce_ex__(self, protocol):  # POLICY
        return (str, ("ESCAPED: reduce_ex ran",))


def entry(inputs):
    return copy.copy(C())
