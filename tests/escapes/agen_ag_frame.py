"""An async generator's ag_frame and its f_locals/f_globals."""


async def agen(secret):
    yield secret


def entry(inputs):
    a = agen(1)
    frame = a.ag_frame  # POLICY
    return "ESCAPED: " + str(frame.f_locals) + str(sorted(frame.f_globals))  # POLICY
