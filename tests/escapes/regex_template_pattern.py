"""string.Template subclasses compile their `pattern` with the standard library's re (no
deadline): a catastrophic placeholder pattern holds the worker past the call's deadline."""
import string


class T(string.Template):
    pattern = r"(?P<escaped>(a|aa)+$)|(?P<named>\b\B)|(?P<braced>\b\B)|(?P<invalid>\b\B)"


def entry(inputs):
    T("a" * inputs["n"] + "b").safe_substitute()
    return "ESCAPED: template regex finished"
