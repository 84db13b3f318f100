"""class X(metaclass=...): an ABC's metaclass obtained through type()."""
import abc


class X(metaclass=type(abc.ABC)):  # POLICY
    pass


def entry(inputs):
    return "ESCAPED: " + str(X)
