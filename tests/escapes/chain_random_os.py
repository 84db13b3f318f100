"""Module attribute chain: random._os."""
import random


def entry(inputs):
    return "ESCAPED: " + random._os.getcwd()
