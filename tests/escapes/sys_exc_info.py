"""sys.exc_info()[2] for the traceback."""
import sys  # POLICY


def entry(inputs):
    try:
        raise ZeroDivisionError("x")
    except ZeroDivisionError:
        tb = sys.exc_info()[2]
        return "ESCAPED: " + str(tb.tb_frame.f_globals["__name__"])  # POLICY
