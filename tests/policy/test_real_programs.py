"""Real programs run unchanged: the bodies of pyperformance benchmarks that use only vetted modules
(tests/fixtures/pyperformance/, harness replaced by ``entry(inputs)``) pack with the source check,
load through the bytecode check, and return in the sandbox, in thread and in process mode, exactly
what plain CPython returns for the same program."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vm.host.runtime import Runtime
from vm.tools.packer import pack

PROGRAMS = Path(__file__).resolve().parents[1] / "fixtures" / "pyperformance"
NAMES = sorted(p.stem for p in PROGRAMS.glob("bm_*.py"))
SYSTEM = "pyperf"

_PLAIN = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
print(json.dumps({n: importlib.import_module(n).entry({}) for n in sys.argv[2:]}))
"""


def test_the_target_programs_are_all_there() -> None:
    assert {n[3:] for n in NAMES} >= {"nbody", "deltablue", "richards", "float", "chaos", "go", "hexiom",
                                      "spectral_norm", "nqueens", "fannkuch", "raytrace", "json_dumps"}


@pytest.fixture(scope="module")
def programs_bundle(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Path:
    """All programs in one bundle, each its own module and entry, packed with the source check."""
    src = tmp_path_factory.mktemp("programs")
    for name in NAMES:
        (src / f"{name}.py").write_text((PROGRAMS / f"{name}.py").read_text())
    (src / "bundle.json").write_text(json.dumps({"name": "programs", "version": "1.0.0", "system": SYSTEM,
                                                 "entries": {n: f"{n}:entry" for n in NAMES}}))
    out = src / "programs.evb"
    pack(src, keys_dir, out, targets=[f"{sys.version_info.major}.{sys.version_info.minor}"])
    return out


@pytest.fixture(scope="module")
def plain_results() -> dict[str, object]:
    """Each program's result under plain CPython (a fresh interpreter: no sandbox, real modules)."""
    proc = subprocess.run([sys.executable, "-c", _PLAIN, str(PROGRAMS), *NAMES], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module", params=["thread", "process"])
def runtime(request: pytest.FixtureRequest, keys_dir: Path, programs_bundle: Path) -> Iterator[Runtime]:
    if request.param == "process" and not sys.platform.startswith("linux"):
        pytest.skip("process isolation runs on Linux only")
    with Runtime({"keys": keys_dir, "isolation": request.param, "deadline_ms": 30_000}) as rt:
        rt.load(programs_bundle)
        yield rt


@pytest.mark.parametrize("name", NAMES)
def test_program_runs_unchanged(name: str, runtime: Runtime, plain_results: dict[str, object]) -> None:
    got = runtime.infer(SYSTEM, name, {})
    assert json.loads(json.dumps(got)) == plain_results[name]
