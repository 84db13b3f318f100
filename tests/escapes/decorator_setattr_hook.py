"""A class decorator that installs a hook with setattr and a computed name."""


def hook(self, name):
    return "ESCAPED: hook installed by a decorator, ran for " + name


def add_hook(cls):
    setattr(cls, "__get" + "attr__", hook)
    return cls


@add_hook
class C:
    pass


def entry(inputs):
    return C().anything
