"""edgevm: an embeddable on-device runtime for ML feature scripts.

``from vm import Runtime`` is the Python API; everything else is loaded lazily so that
importing the package stays cheap (the bytecode compiler worker imports parts of it under
other CPython versions with nothing but the standard library).
"""
__version__ = "0.1.0"

__all__ = ["Runtime", "__version__"]


def __getattr__(name: str):
    if name == "Runtime":
        from vm.host.runtime import Runtime

        return Runtime
    raise AttributeError(f"module 'vm' has no attribute {name!r}")
