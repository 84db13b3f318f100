"""A coroutine's cr_frame and its f_builtins."""


async def coro():
    return 1


def entry(inputs):
    c = coro()
    b = c.cr_frame.f_builtins  # POLICY
    c.close()
    return "ESCAPED: " + str("__import__" in b)
