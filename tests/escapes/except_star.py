"""except* and ExceptionGroup members: the group's traceback frame."""


def entry(inputs):
    found = []
    try:
        raise ExceptionGroup("g", [ValueError("v")])
    except* ValueError as eg:
        found.append(eg.exceptions[0])
        found.append(eg.__traceback__.tb_frame.f_globals)  # POLICY
    return "ESCAPED: " + str(found)
