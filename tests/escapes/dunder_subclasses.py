"""object.__subclasses__() through a literal's class: find a class whose __init__ globals hold sys."""


def entry(inputs):
    for cls in ().__class__.__base__.__subclasses__():  # POLICY
        init = cls.__init__
        glb = getattr(init, "__globals__", None)
        if glb and "sys" in glb:
            return "ESCAPED: " + glb["sys"].__name__
    return "no sys found"
