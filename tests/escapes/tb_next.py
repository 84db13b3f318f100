"""Walk tb_next into a frame raised inside library code."""
import json


def entry(inputs):
    try:
        json.loads("{")
    except ValueError as e:
        tb = e.__traceback__  # POLICY
        while tb.tb_next is not None:  # POLICY
            tb = tb.tb_next  # POLICY
        return "ESCAPED: " + str(sorted(tb.tb_frame.f_globals))  # POLICY
    return "no"
