"""A generator's gi_frame, then f_back up to a runtime frame and its f_globals."""


def gen():
    yield 1


def entry(inputs):
    g = gen()
    next(g)
    frame = g.gi_frame  # POLICY
    glb = frame.f_globals  # POLICY
    if "__builtins__" in glb:
        return "ESCAPED: frame globals"
    return "no"
