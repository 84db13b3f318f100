"""__getattr__ runs for every missing attribute (including ones runtime code probes)."""


class C:
    def __getattr__(self, name):  # POLICY
        return "ESCAPED: getattr hook " + name


def entry(inputs):
    return C().anything
