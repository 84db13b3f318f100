"""Packaging: installs the runtime, builds the native operators (cffi) and the interpreter guard."""
from setuptools import Extension, setup

setup(
    cffi_modules=["build.py:ops_ffi"],
    ext_modules=[
        Extension(
            "vm._guard",
            sources=["native/guard.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ],
)
