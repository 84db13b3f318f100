"""__reduce__ returning a callable that copy.deepcopy calls."""
import copy


class C:
    def __reduce__(self):  # POLICY
        return (str, ("ESCAPED: reduce ran",))


def entry(inputs):
    return copy.deepcopy(C())
