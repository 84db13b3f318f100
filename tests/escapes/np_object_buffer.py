"""numpy: an object-dtype ndarray over a script-controlled bytearray turns integers into object
pointers (the classic fakeobj primitive). hash() of a plain object is its address, rotated."""
import numpy as np


class Target:
    pass


def entry(inputs):
    x = Target()
    h = hash(x) & (2**64 - 1)
    addr = ((h << 4) | (h >> 60)) & (2**64 - 1)
    fake = np.ndarray((1,), object, buffer=bytearray(addr.to_bytes(8, "little")))
    if fake[0] is x:
        return "ESCAPED: object from a raw address"
    return "no"
