"""CPython 3.14 and free-threaded 3.14t, where they are built (``~/.cache/edgevm/py314`` and ``py314t``,
or ``EDGEVM_PYTHONS``; see docs/shipping.md): a bundle packed for 3.14 runs on both, the verifier
accepts what 3.14's compiler emits, every native mechanism holds from several threads with the GIL
off (gil_free_stress.py), and the per-call memory budget, which cannot hold there in thread mode, is
refused with a clear error. Skipped with the reason where the interpreters are absent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from policy.test_versions import RUNNER, SCRIPT, VERIFY_STDLIB, _env_for

from vm.guard import FREE_THREADED
from vm.tools.packer import SOURCE_BUILDS

ROOT = Path(__file__).resolve().parents[2]
STRESS = Path(__file__).with_name("gil_free_stress.py")
BUILDS = {"3.14": f"{SOURCE_BUILDS}/py314/bin/python3.14", "3.14t": f"{SOURCE_BUILDS}/py314t/bin/python3.14t"}
# Seconds per mechanism: short in make test, long with EDGEVM_STRESS=1.
STRESS_S = 10.0 if os.environ.get("EDGEVM_STRESS") else 1.0


def _python(build: str) -> str:
    """The environment's interpreter for a 3.14 build (this one if it is that build)."""
    current = f"{sys.version_info[0]}.{sys.version_info[1]}" + ("t" if FREE_THREADED else "")
    if build == current:
        return sys.executable
    exe = BUILDS[build]
    if not os.access(exe, os.X_OK):
        pytest.skip(f"CPython {build} is not built here ({exe}): see docs/shipping.md")
    return str(_env_for(build, exe))


@pytest.fixture(scope="module")
def bundle_314(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Path:
    from conftest import BundleMaker

    if sys.version_info[:2] != (3, 14) and not any(os.access(exe, os.X_OK) for exe in BUILDS.values()):
        pytest.skip(f"no CPython 3.14 built here ({SOURCE_BUILDS}): see docs/shipping.md")
    return BundleMaker(tmp_path_factory.mktemp("py314"), keys_dir)(SCRIPT, targets=["3.14"])


@pytest.mark.parametrize("build", ["3.14", "3.14t"])
def test_a_bundle_packed_for_314_runs_on_it(bundle_314: Path, keys_dir: Path, build: str) -> None:
    proc = subprocess.run([_python(build), "-W", "error::RuntimeWarning", "-c", RUNNER, str(keys_dir),
                           str(bundle_314)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["version"] == [3, 14]
    assert report["out"] == {"head": "a", "values": [3.0, 4], "tag": "same source, every interpreter"}


def test_the_verifier_accepts_what_314_emits() -> None:
    proc = subprocess.run([_python("3.14"), "-W", "ignore", "-c", VERIFY_STDLIB], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["checked"] > 400
    assert report["structural"] == []


def test_every_mechanism_holds_from_several_threads_without_the_gil() -> None:
    # -W error: importing a module that has not declared Py_mod_gil would turn the GIL back on (warning).
    proc = subprocess.run([_python("3.14t"), "-W", "error::RuntimeWarning", str(STRESS), str(STRESS_S)],
                          capture_output=True, text=True, timeout=120 + 8 * STRESS_S, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["gil_enabled"] is False
    assert report["wrong"] == {"verifier": 0, "handoff": 0, "kill": 0, "freeze": 0}


BUDGET = """
import json, sys
from vm.errors import BadInput
from vm.guard import _guard
from vm.host.config import Config
out = {}
try:
    Config.from_dict({"keys": sys.argv[1], "isolation": "thread", "memory_limit_mb": 64})
    out["thread"] = "accepted"
except BadInput as exc:
    out["thread"] = str(exc)
out["process"] = Config.from_dict({"keys": sys.argv[1], "isolation": "process", "memory_limit_mb": 64}).memory_limit
try:
    _guard.memory_install()
    out["install"] = "installed"
except RuntimeError as exc:
    out["install"] = str(exc)
print(json.dumps(out))
"""


def test_the_memory_budget_is_refused_in_thread_mode_on_free_threaded_314(keys_dir: Path) -> None:
    proc = subprocess.run([_python("3.14t"), "-c", BUDGET, str(keys_dir)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "cannot be enforced in thread mode" in out["thread"] and "'process'" in out["thread"]
    assert out["process"] == 64 << 20
    assert "free-threaded" in out["install"]


YIELDS = """
import ctypes, json, threading
from vm.execution import parking
count = ctypes.CDLL(None).edgevm_test_yields
count.restype = ctypes.c_long
out = {}
for name, event, cond in (("threading", threading.Event(), threading.Condition(threading.Lock())),
                          ("parking", parking.Event(), parking.Condition(threading.Lock()))):
    before = count()
    for _ in range(100):  # waits that time out: nothing else holds the locks
        assert not event.wait(0.001)
        with cond:
            assert not cond.wait(0.001)
    out[name] = count() - before
print(json.dumps(out))
"""


def test_waits_park_without_spinning_on_free_threaded_314(tmp_path: Path) -> None:
    # An idle worker's or a caller's wait: threading's spins on sched_yield() before it sleeps (up to
    # 40 times per wait on a multi-core machine), parking's goes to sleep at once.
    shim = tmp_path / "yield_counter.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(Path(__file__).with_name("yield_counter.c"))],
                   check=True, capture_output=True)
    proc = subprocess.run([_python("3.14t"), "-c", YIELDS], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "LD_PRELOAD": str(shim)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    if out["threading"] == 0:
        pytest.skip("this CPython's locks do not spin on this machine (one CPU): nothing to compare")
    assert out["threading"] >= 200  # the counter sees the spinning, at least once per wait
    assert out["parking"] == 0, out
