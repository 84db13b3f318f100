"""One ``pack`` compiles for CPython 3.11, 3.12 and 3.13; each interpreter loads and runs its own
bytecode, and refuses a bundle that lacks it with an error naming what it needs.

Each interpreter gets a small environment of its own (``.venv-3.X`` at the repository root) with
the runtime installed in editable mode, created on first use."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vm.errors import IncompatibleError
from vm.host.runtime import Runtime
from vm.tools.packer import find_interpreters

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ["3.11", "3.12", "3.13"]
SCRIPT = {
    "features.py": """
        import sys_info
        from dataclasses import dataclass


        @dataclass
        class Stat:
            name: str
            value: float


        def entry(inputs):
            stats = [Stat(k, v * 2) for k, v in sorted(inputs.items())]
            match stats:
                case [Stat(name=first), *rest]:
                    head = first
                case _:
                    head = None
            return {"head": head, "values": [s.value for s in stats], "tag": sys_info.TAG}
        """,
    "sys_info.py": "TAG = 'same source, every interpreter'\n",
}
RUNNER = """
import json, sys, importlib.util
from vm.host.runtime import Runtime
rt = Runtime({"keys": sys.argv[1], "deadline_ms": 5000})
rt.load(sys.argv[2])
out = rt.infer("s", "b", {"b": 2, "a": 1.5})
rt.close()
print(json.dumps({"out": out, "magic": importlib.util.MAGIC_NUMBER.hex(),
                  "version": list(sys.version_info[:2])}))
"""


def _build_inputs_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([ROOT / "setup.py", ROOT / "build.py", ROOT / "pyproject.toml",
                        *(ROOT / "native").glob("*/*.[ch]"), *(ROOT / "native").glob("*/*.cdef")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _env_for(version: str, exe: str) -> Path:
    venv = ROOT / f".venv-{version}"
    python = venv / "bin" / "python"
    stamp = venv / ".edgevm-ready"
    digest = _build_inputs_digest()
    if not python.exists():
        subprocess.run([exe, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not stamp.exists() or stamp.read_text().strip() != digest:
        subprocess.run([*pip, "setuptools>=77", "wheel", "cffi>=1.17", "numpy>=2.0", "msgpack", "pynacl",
                        "regex"], check=True)
        subprocess.run([*pip, "--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True)
        stamp.write_text(digest + "\n")
    return python


@pytest.fixture(scope="module")
def interpreters() -> dict[str, str]:
    found = find_interpreters(None)
    missing = [v for v in VERSIONS if v not in found]
    if missing:
        pytest.fail(f"this machine should have CPython {', '.join(missing)} (pyenv): not found")
    return found


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path, interpreters) -> Path:
    from conftest import BundleMaker

    return BundleMaker(tmp_path_factory.mktemp("multi"), keys_dir)(SCRIPT, targets=VERSIONS)


def test_pack_has_one_blob_per_magic(multi: Path, keys_dir: Path) -> None:
    from vm.bundle.keys import load_device
    from vm.bundle.loader import read_header

    info = read_header(multi.read_bytes(), load_device(keys_dir), max_size=1 << 26)
    assert [t["python"] for t in info["header"]["targets"]] == VERSIONS
    assert len({t["magic"] for t in info["header"]["targets"]}) == 3


@pytest.mark.parametrize("version", VERSIONS)
def test_each_interpreter_runs_its_own_bytecode(multi: Path, keys_dir: Path, interpreters, version: str) -> None:
    python = sys.executable if version == f"{sys.version_info[0]}.{sys.version_info[1]}" else \
        str(_env_for(version, interpreters[version]))
    proc = subprocess.run([python, "-c", RUNNER, str(keys_dir), str(multi)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["version"] == [int(x) for x in version.split(".")]
    assert report["out"] == {"head": "a", "values": [3.0, 4], "tag": "same source, every interpreter"}


VERIFY_STDLIB = """
import json, pathlib, sysconfig
from vm.policy.verifier import verify_module_code
from vm.errors import PolicyError
stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
checked, structural = 0, []
for path in sorted(stdlib.rglob("*.py")):
    if {"test", "tests", "site-packages", "idlelib"} & set(path.parts):
        continue
    try:
        code = compile(path.read_text(encoding="utf-8"), "m.py", "exec", dont_inherit=True)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        continue
    checked += 1
    try:
        verify_module_code(code, filename="m.py", bundle_modules=frozenset())
    except PolicyError as exc:
        # name rules may refuse stdlib code; structure (and star imports and 3.14's template strings,
        # refused on purpose) aside, nothing the compiler emits may be refused
        structural += [f"{path.name}: {p}" for p in exc.detail["problems"]
                       if not p.startswith("m.py:") and "IMPORT_STAR" not in p and "CALL_INTRINSIC_1" not in p
                       and "BUILD_TEMPLATE" not in p and "BUILD_INTERPOLATION" not in p]
print(json.dumps({"checked": checked, "structural": structural[:10]}))
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_verifier_accepts_what_each_compiler_emits(interpreters, version: str) -> None:
    python = sys.executable if version == f"{sys.version_info[0]}.{sys.version_info[1]}" else \
        str(_env_for(version, interpreters[version]))
    proc = subprocess.run([python, "-W", "ignore", "-c", VERIFY_STDLIB], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["checked"] > 400
    assert report["structural"] == []


def test_missing_target_is_refused_with_what_is_needed(make_bundle, keys_dir: Path, interpreters) -> None:
    current = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other = "3.12" if current != "3.12" else "3.11"
    only_other = make_bundle(SCRIPT, targets=[other])
    with Runtime({"keys": keys_dir}) as rt, pytest.raises(IncompatibleError) as info:
        rt.load(only_other)
    message = str(info.value)
    assert f"needs CPython {current}" in message and other in message
    assert info.value.detail["needed"]["python"] == current
