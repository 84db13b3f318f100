"""From inside a running generator, its own frame's f_back chain reaches the runtime's frames."""


def walker(box):
    frame = box[0].gi_frame  # POLICY
    while frame is not None:
        if "os" in frame.f_globals:  # POLICY
            yield frame.f_globals["os"]
            return
        frame = frame.f_back  # POLICY
    yield None


def entry(inputs):
    box = [None]
    g = walker(box)
    box[0] = g
    found = next(g)
    return "ESCAPED: " + found.getcwd()
