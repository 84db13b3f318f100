"""A package in the bundle: relative imports stay inside it."""
from . import util
from .util import clamp

__all__ = ["clamp", "util"]
