"""The fuzz suite under AddressSanitizer and UndefinedBehaviorSanitizer: a short run inside
``make test`` (``make fuzz`` is the long one). The instrumented vm.ml._ops is built into
build/ops-asan-*/ (the normal build is untouched) and loaded by a child Python with libasan preloaded."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import fuzz_sanitized
import pytest

HERE = Path(__file__).resolve().parent

SHORT_EXAMPLES = 8
REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")


@pytest.fixture(scope="module")
def sanitized() -> Path:
    if fuzz_sanitized.libasan() is None:
        pytest.skip("gcc or its AddressSanitizer runtime (libasan.so) is not installed")
    return fuzz_sanitized.build()


def run_child(build_dir: Path, args: list[str], examples: int = SHORT_EXAMPLES) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=fuzz_sanitized.ROOT, capture_output=True, text=True,
                          env=fuzz_sanitized.sanitized_env(build_dir, examples), timeout=900)


def test_the_sanitizers_are_live(sanitized: Path) -> None:
    """The harness can fail: an out-of-bounds read through the C layer (a lying count) aborts the
    sanitized child with an AddressSanitizer report."""
    probe = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import sanitized_plugin  # puts the sanitized build first, and checks it is the one loaded
        import numpy as np
        from vm.ml._ops import ffi, lib
        ids, out = np.zeros(4, np.int64), np.zeros(64, np.int64)
        lib.ops_hash_ids(ffi.from_buffer(ids), 64, 0, 10, ffi.from_buffer(out))
        print("NOT DETECTED")
        """)
    r = run_child(sanitized, ["-c", probe])
    assert r.returncode != 0 and "NOT DETECTED" not in r.stdout, r.stdout + r.stderr
    assert "AddressSanitizer: heap-buffer-overflow" in r.stderr, r.stderr[-3000:]


def test_fuzz_suite_is_clean_under_asan_and_ubsan(sanitized: Path) -> None:
    r = run_child(sanitized, ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "sanitized_plugin",
                               *fuzz_sanitized.SUITE])
    output = r.stdout + r.stderr
    assert r.returncode == 0, output[-6000:]
    assert not any(report in output for report in REPORTS), output[-6000:]
