"""metaclass= any callable: it receives the class namespace and returns what it likes -- here a
class built by the ABC metaclass (reached through an instance of an ABC subclass)."""
import abc


class Base(abc.ABC):  # noqa: B024
    pass


def meta(name, bases, ns):
    ns["__getattr__"] = lambda self, n: "ESCAPED: hook via metaclass function"
    return type(Base)(name, bases, ns)


class C(Base, metaclass=meta):  # POLICY
    pass


def entry(inputs):
    return C().anything
