"""__class__ then __mro__ to object, then its subclasses."""


def entry(inputs):
    top = (1).__class__.__mro__[-1]  # POLICY
    return f"ESCAPED: {len(top.__subclasses__())} classes"
