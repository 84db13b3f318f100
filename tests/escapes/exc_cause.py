"""Explicit chaining: __cause__ and its frame."""


def entry(inputs):
    try:
        try:
            raise ZeroDivisionError("x")
        except ZeroDivisionError as z:
            raise KeyError("k") from z
    except KeyError as e:
        return "ESCAPED: " + str(e.__cause__.__traceback__.tb_frame.f_globals)  # POLICY
