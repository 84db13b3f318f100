"""Implicit chaining: __context__ of a second exception, then its __traceback__."""


def entry(inputs):
    try:
        try:
            raise ZeroDivisionError("x")
        except ZeroDivisionError:
            raise KeyError("k")  # noqa: B904
    except KeyError as e:
        inner = e.__context__  # POLICY
        return "ESCAPED: " + str(inner.__traceback__.tb_frame)  # POLICY
