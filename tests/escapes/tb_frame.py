"""An exception's __traceback__, tb_frame, f_back, f_globals."""


def entry(inputs):
    try:
        raise ZeroDivisionError("x")
    except ZeroDivisionError as e:
        tb = e.__traceback__  # POLICY
        frame = tb.tb_frame  # POLICY
        while frame is not None:
            if "os" in frame.f_globals:  # POLICY
                return "ESCAPED: " + frame.f_globals["os"].getcwd()
            frame = frame.f_back  # POLICY
    return "no"
