"""Suspended generators, coroutines and async generators in reference cycles: their `finally` runs
when the garbage collector gets to them -- in whatever thread allocates next (a host thread, another
bundle's call, the runtime's own code), outside this call's deadline and memory budget. An endless
loop there would hang that thread for good."""
ran_outside = []
in_call = [False]


def note():
    if not in_call[0]:
        ran_outside.append("ESCAPED: script code ran outside its own call")  # (an endless loop here
        # would have held that thread for good: edge.remaining_ms() is inf outside any call)


def lingering(box):
    try:
        yield 1
    finally:
        note()


class Suspend:
    def __await__(self):
        yield


async def lingering_coro(box):
    try:
        await Suspend()
    finally:
        note()


async def lingering_agen(box):
    try:
        yield 1
    finally:
        note()


def plant(kind):
    box = []
    if kind == "generator":
        g = lingering(box)
        next(g)
    elif kind == "coroutine":
        g = lingering_coro(box)
        g.send(None)
    else:
        g = lingering_agen(box)
        try:
            g.asend(None).send(None)
        except StopIteration:
            pass
    box.append(g)


def abandoned_inline():
    # Dropped by reference count inside the call: its handlers run here, as in plain Python.
    done = []

    def gen():
        try:
            yield 1
        finally:
            done.append("closed")

    for _ in gen():
        break
    return done


def entry(inputs):
    in_call[0] = True
    try:
        if inputs.get("report"):
            return ran_outside
        if inputs.get("inline"):
            return abandoned_inline()
        plant(inputs["kind"])
        return "planted"
    finally:
        in_call[0] = False
