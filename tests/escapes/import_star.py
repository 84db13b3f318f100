"""from module import * (pulls in whatever the module holds)."""
from json import *  # noqa: F403  # POLICY


def entry(inputs):
    return "ESCAPED: star import"
