"""A class decorator that installs a hook after the class body was checked."""


def hook(self, name):
    return "ESCAPED: hook installed by a decorator, ran for " + name


def add_hook(cls):
    cls.__getattr__ = hook  # POLICY
    return cls


@add_hook
class C:
    pass


def entry(inputs):
    return C().anything
