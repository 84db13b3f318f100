"""string.Template placeholders never walk attributes (only mapping lookups)."""
import string


class T(string.Template):
    idpattern = r"[a-z_.]+"


def entry(inputs):
    out = T("$x.__class__").safe_substitute({"x": 1})
    if "<class" in out:
        return "ESCAPED: " + out
    raise LookupError("placeholder was not resolved through attributes: " + out)
