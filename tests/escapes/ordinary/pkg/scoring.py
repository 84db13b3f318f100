import math

from .util import clamp


def score(xs):
    return round(clamp(math.fsum(xs) / len(xs), 0, 100), 3)
