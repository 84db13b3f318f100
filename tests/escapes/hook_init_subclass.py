"""__init_subclass__ runs when someone subclasses (e.g. library code)."""


class Base:
    def __init_subclass__(cls, **kw):  # POLICY
        cls.hooked = "ESCAPED: init_subclass ran"


class Child(Base):
    pass


def entry(inputs):
    return Child.hooked
