"""Run the native-ops fuzz suite against vm.ml._ops built with -fsanitize=address,undefined.

    python tests/ml/fuzz_sanitized.py [--examples N] [pytest arguments...]

Builds the instrumented extension (build.py's ``build_ops_sanitized``, into build/ops-asan-*/, cached
per source state; the normal build is untouched), then runs pytest on the fuzz suite and the ops
tests in a child process with libasan preloaded (CPython itself is not instrumented), any
AddressSanitizer or UndefinedBehaviorSanitizer report fatal, and ``EDGEVM_FUZZ_EXAMPLES`` = N
hypothesis examples per fuzz test. ``make fuzz`` is the long run; tests/ml/test_ops_sanitized.py runs
a short one inside ``make test``. Exits with pytest's status (a sanitizer abort is non-zero).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = ["tests/ml/test_ops_fuzz.py", "tests/ml/test_native_ops.py"]
ASAN_OPTIONS = "detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:detect_stack_use_after_return=0"
UBSAN_OPTIONS = "halt_on_error=1:abort_on_error=1:print_stacktrace=1"


def libasan() -> str | None:
    """The path of gcc's libasan.so, or None without gcc or its ASan runtime."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    found = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return found if os.path.isabs(found) and os.path.exists(found) else None


def sanitized_env(build_dir: Path, examples: int) -> dict[str, str]:
    """The environment of a child Python that loads the sanitized ops build from ``build_dir``."""
    lib = libasan()
    if lib is None:
        raise RuntimeError("gcc's libasan.so was not found (gcc -print-file-name=libasan.so)")
    env = dict(os.environ)
    env.update(LD_PRELOAD=lib, ASAN_OPTIONS=ASAN_OPTIONS, UBSAN_OPTIONS=UBSAN_OPTIONS,
               EDGEVM_OPS_SANITIZED=str(build_dir), EDGEVM_FUZZ_EXAMPLES=str(examples),
               OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "tests" / "ml"), os.environ.get("PYTHONPATH")])))
    return env


def build() -> Path:
    sys.path.insert(0, str(ROOT))
    import build as builder

    return builder.build_ops_sanitized()


def main(argv: list[str]) -> int:
    examples = 500
    if argv[:1] == ["--examples"]:
        examples, argv = int(argv[1]), argv[2:]
    env = sanitized_env(build(), examples)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "sanitized_plugin", *(argv or SUITE)]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
