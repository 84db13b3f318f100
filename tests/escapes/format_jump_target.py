"""The load-time check trusts the instruction *before* LOAD_ATTR format; a jump lands between them.

(s or "{}").format(x): the LOAD_CONST "{}" precedes LOAD_ATTR format in the byte stream, but when
s is truthy the receiver is s, a string with attribute fields. Packed code calls the format guard
with whichever receiver arrives; raw bytecode meets the load-time check.
"""
import edge


def entry(inputs):
    s = "{0.__globals__[__name__]}"
    return "ESCAPED: " + (s or "{}").format(edge.log)
