"""A class pattern keyword naming an introspection attribute: gi_frame of a generator."""


def gen():
    yield 1


def entry(inputs):
    g = gen()
    match g:
        case object(gi_frame=frame):  # POLICY
            return "ESCAPED: " + str(frame)
    return "no"
