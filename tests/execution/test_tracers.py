"""Under a profile or trace function (cProfile, pdb, coverage, an IDE debugger) a bundle loads, runs,
times out and keeps serving on every CPython the fleet runs, instead of spinning at 100 % CPU past
its deadlines (CPython 3.11 once did: a dropped late timeout left its interpreter-wide
"asynchronous exception pending" request set, see native/guard/deadline.c).

Each run is a subprocess with a hard timeout, so a hang fails the test instead of the suite. The
interpreters other than this one run in the environments of tests/policy/test_versions.py."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from policy.test_versions import VERSIONS, _env_for

from vm.tools.packer import find_interpreters

ROOT = Path(__file__).resolve().parents[2]
HANG_S = 120  # far above a healthy run, traced; only a hang reaches it
SCRIPT = """
import edge


def double(inputs):
    return inputs["x"] * 2


def spin(inputs):
    while True:
        pass


class Shield:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


def stubborn(inputs):
    # Swallows every timeout: only the watchdog's last resort (kill_trace) stops it, which must put
    # the tracer it displaced back on every thread afterwards.
    while True:
        with Shield():
            while True:
                pass


def until_deadline(inputs):
    # Returns just as the deadline passes: the watchdog's timeout may land as the call returns.
    while edge.remaining_ms() > 0.1:
        pass
    return "returned"
"""
ENTRIES = {name: f"features:{name}" for name in ("double", "spin", "stubborn", "until_deadline")}
SLOW_LOAD = "while True:\n    pass\n\n\ndef entry(inputs):\n    return 1\n"
TRACED = """
import json, sys, threading

mode = sys.argv[1]
if mode == "setprofile":
    def tracer(frame, event, arg):
        return None
    sys.setprofile(tracer)
    threading.setprofile(tracer)
elif mode == "settrace":
    def tracer(frame, event, arg):
        return tracer
    sys.settrace(tracer)
    threading.settrace(tracer)
else:
    import coverage
    cov = coverage.Coverage(data_file=None)
    cov.start()


def still_traced():
    if mode == "coverage":
        return sys.gettrace() is not None
    return (sys.getprofile() if mode == "setprofile" else sys.gettrace()) is tracer
"""
RUNNER = TRACED + """
from vm.errors import Timeout
from vm.host.runtime import Runtime

keys, bundle, slow = sys.argv[2:5]
report = {}
with Runtime({"keys": keys, "deadline_ms": 50, "isolation": "thread", "breaker_failures": 1000}) as rt:
    rt.load(bundle)
    report["double"] = rt.infer("s", "double", {"x": 21}, deadline_ms=5000)
    try:
        rt.infer("s", "spin", {})
    except Timeout as exc:
        report["spin"] = exc.name
    try:
        rt.infer("s", "stubborn", {})
    except Timeout as exc:
        report["stubborn"] = exc.name
    report["traced_after_stop"] = still_traced()
    outcomes = set()
    for _ in range(30):
        try:
            outcomes.add(rt.infer("s", "until_deadline", {}, deadline_ms=3))
        except Timeout as exc:
            outcomes.add(exc.name)
    report["until_deadline"] = sorted(outcomes)
    report["after"] = rt.infer("s", "double", {"x": 4}, deadline_ms=5000)
with Runtime({"keys": keys, "load_deadline_ms": 50, "isolation": "thread"}) as rt:
    try:
        rt.load(slow)
    except Timeout as exc:
        report["slow_load"] = exc.name
report["traced"] = still_traced()
if mode == "coverage":
    cov.stop()
    report["measured"] = any(f.endswith("runtime.py") for f in cov.get_data().measured_files())
print(json.dumps(report))
"""
# The watchdog's timeout landing exactly as a guarded call returns, made deterministic: fn is a C
# function that leaves the timeout pending on its own thread, with no bytecode after it.
LATE = TRACED + """
import _thread, ctypes, functools, operator, time
from vm.execution.watchdog import Watchdog
from vm.guard.context import ScriptTimeout

set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
me = threading.get_ident()
dog = Watchdog()
report = {"returned": dog.run(time.monotonic() + 5, set_async_exc, me, ScriptTimeout)}
# With a signal's exception due beside it (two C calls, no bytecode in between): the signal's
# exception is the call's outcome, the late timeout is still dropped.
both = functools.partial(list, map(operator.call, [functools.partial(set_async_exc, me, ScriptTimeout),
                                                   _thread.interrupt_main]))
try:
    dog.run(time.monotonic() + 5, both)
except KeyboardInterrupt as exc:
    report["signal"] = type(exc).__name__
for _ in range(1000):  # the runtime's own code, after the calls: no ScriptTimeout may surface here
    (lambda: None)()
report["traced"] = still_traced()
dog.close()
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> tuple[Path, Path]:
    from conftest import BundleMaker

    _interpreters()
    make = BundleMaker(tmp_path_factory.mktemp("tracers"), keys_dir)
    return (make({"features.py": SCRIPT}, entries=ENTRIES, targets=VERSIONS),
            make({"features.py": SLOW_LOAD}, name="slow", targets=VERSIONS))


@functools.cache
def _interpreters() -> dict[str, str]:
    found = find_interpreters(None)
    missing = [v for v in VERSIONS if v not in found]
    if missing:
        pytest.fail(f"this machine should have CPython {', '.join(missing)} (pyenv): not found")
    return found


def _python(version: str) -> str:
    if version == f"{sys.version_info[0]}.{sys.version_info[1]}":
        return sys.executable
    return str(_env_for(version, _interpreters()[version]))


def _ensure_coverage(python: str) -> None:
    """The cross-version environments install the runtime's dependencies only; add the test extra's
    coverage requirement where it is missing."""
    if subprocess.run([python, "-c", "import coverage"], capture_output=True).returncode == 0:
        return
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    spec = next(req for req in extras["test"] if req.startswith("coverage"))
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec], check=True)


def _run(version: str, mode: str, script: str, *args: str) -> dict:
    python = _python(version)
    if mode == "coverage":
        _ensure_coverage(python)
    try:
        proc = subprocess.run([python, "-c", script, mode, *args], capture_output=True, text=True,
                              timeout=HANG_S, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"CPython {version} under {mode}: still running after {HANG_S} s (hung)")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


MODES = ["setprofile", "settrace", "coverage"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", VERSIONS)
def test_load_and_infer_under_a_tracer(bundles: tuple[Path, Path], keys_dir: Path, version: str,
                                       mode: str) -> None:
    bundle, slow = bundles
    report = _run(version, mode, RUNNER, str(keys_dir), str(bundle), str(slow))
    assert report["traced"] and report.get("measured", True), "the tracer was not active to the end"
    assert report["double"] == 42 and report["after"] == 8
    assert report["traced_after_stop"], "the watchdog's last resort left the tracer displaced"
    assert report["spin"] == report["stubborn"] == report["slow_load"] == "timeout"
    assert set(report["until_deadline"]) <= {"returned", "timeout"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", VERSIONS)
def test_a_timeout_pending_as_the_call_returns_is_dropped(version: str, mode: str) -> None:
    # Dropping it must also withdraw CPython's "asynchronous exception pending" request (3.11 left it
    # set), and leave the tracer in place (CPython drops a profile function that raises).
    report = _run(version, mode, LATE)
    assert report == {"returned": 1, "signal": "KeyboardInterrupt", "traced": True}
