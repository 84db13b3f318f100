"""cffi build scripts for native/.

``ops_ffi`` builds ``vm._ops``: the native feature operators (API mode, out of line).
Used by setup.py (``cffi_modules``); ``python build.py`` builds them in place for development.
"""
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent
NATIVE = "native"


def _ops_builder() -> FFI:
    ffi = FFI()
    ffi.cdef((ROOT / NATIVE / "ops.cdef").read_text())
    ffi.set_source(
        "vm._ops",
        '#include "ops.h"',
        sources=[f"{NATIVE}/ops.c"],
        include_dirs=[NATIVE],
        # -fno-trapping-math lets branch-free selects vectorise (no code reads FP exception flags);
        # -ffp-contract=off keeps results bit-identical across the multiversioned (SSE2/AVX2/AVX-512)
        # clones of the hot loops.
        extra_compile_args=[
            "-O3",
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-fno-strict-aliasing",
            "-fno-trapping-math",
            "-ffp-contract=off",
        ],
    )
    return ffi


ops_ffi = _ops_builder()

if __name__ == "__main__":
    ops_ffi.compile(tmpdir=str(ROOT), verbose=False)
