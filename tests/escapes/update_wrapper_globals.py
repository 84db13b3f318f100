"""functools.update_wrapper takes the attribute names to copy as arguments: with
updated=("__globals__",) it merges a library function's module globals (statistics has `sys`)
into the script's own module namespace."""
import functools
import statistics


def target():
    pass


def entry(inputs):
    functools.update_wrapper(target, statistics.mean, assigned=(), updated=("__globals__",))
    return "ESCAPED: " + sys.modules["os"].getcwd()  # noqa: F821
