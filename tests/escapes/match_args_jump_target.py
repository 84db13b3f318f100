"""__match_args__ from a conditional expression: the load-time check only looks at the constant
loaded just before STORE_NAME, which is the *other* branch."""


class E(Exception):
    __match_args__ = ("__traceback__",) if len("ab") == 2 else ("args",)  # POLICY


def entry(inputs):
    try:
        raise E("x")
    except E as e:
        match e:
            case E(tb):
                return "ESCAPED: got a " + type(tb).__name__
    return "no"
