"""Packaging: installs the runtime, builds the native operators (cffi) and the interpreter guard."""
import numpy
from setuptools import Extension, setup

setup(
    cffi_modules=["build.py:ops_ffi"],
    ext_modules=[
        Extension(
            "vm._guard",
            sources=["native/guard.c"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ],
)
