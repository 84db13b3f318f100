"""Packaging: installs the runtime, builds the native operators (cffi), the interpreter guard, and
the C API (build.py's ``build_capi``): ``libedgevm.so``, ``edgevm.h`` and ``edgevm.pc`` go to the
environment's ``lib/``, ``include/`` and ``lib/pkgconfig/``."""
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# one per environment (build.py's capi_build_dir()): several venvs may build from one source tree
C_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
CAPI_DIR = f"build/capi-{sys.implementation.cache_tag}-{hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]}"


class BuildExtWithCapi(build_ext):
    """``build_ext``, then libedgevm.so into CAPI_DIR, from where ``data_files`` installs it."""

    def run(self) -> None:
        super().run()
        spec = importlib.util.spec_from_file_location("_edgevm_build", ROOT / "build.py")
        builder = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(builder)
        builder.build_capi(ROOT / CAPI_DIR)


setup(
    cffi_modules=["build.py:ops_ffi", "build.py:ort_ffi"],
    cmdclass={"build_ext": BuildExtWithCapi},
    data_files=[("lib", [f"{CAPI_DIR}/libedgevm.so", f"{CAPI_DIR}/edgevm-zygote"]), ("lib/pkgconfig", [f"{CAPI_DIR}/install/edgevm.pc"]),
                ("include", ["native/capi/edgevm.h"])],
    ext_modules=[
        Extension("vm.guard._guard", sources=sorted(str(p) for p in Path("native/guard").glob("*.c")),
                  include_dirs=["native/guard", numpy.get_include()], extra_compile_args=C_FLAGS),
        Extension("vm.policy._verify", sources=["native/verify/verify.c"], extra_compile_args=C_FLAGS),
    ]
    # the worker's lockdown (seccomp, Landlock) is Linux-only
    + ([Extension("vm.isolation._lockdown", sources=sorted(str(p) for p in Path("native/sandbox").glob("*.c")),
                  include_dirs=["native/sandbox"], extra_compile_args=C_FLAGS)] if sys.platform == "linux" else []),
)
