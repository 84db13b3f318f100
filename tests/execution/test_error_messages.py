"""What a guarded call's timeout says: the time the call had, and where in the script it stopped when
the watchdog's exception passed through script frames."""
from __future__ import annotations

import re
import time

import pytest

from vm.errors import Timeout
from vm.execution.executor import execute
from vm.execution.watchdog import Watchdog
from vm.sandbox.report import call_script

SPIN = "def spin(inputs):\n    n = 0\n    while True:\n        n += 1\n"


@pytest.fixture
def dog():
    wd = Watchdog(grace_s=0.05)
    yield wd
    wd.close()


def test_a_timeout_in_script_code_names_its_deadline_and_line(dog: Watchdog) -> None:
    namespace: dict = {}
    exec(compile(SPIN, "features.py", "exec"), namespace)
    result, error = execute(dog, time.monotonic() + 0.1, call_script, (frozenset({"features.py"}), namespace["spin"], {}),
                            memory_limit=None, label="s/b")
    assert result is None and isinstance(error, Timeout)
    found = re.fullmatch(r"s/b did not finish before its deadline \(it had (\d+) ms; stopped at features\.py:([34])\)",
                         str(error))
    assert found, str(error)
    assert int(found[1]) <= 100
    assert error.detail == {"file": "features.py", "line": int(found[2])}


def test_a_timeout_outside_script_code_names_no_line(dog: Watchdog) -> None:
    def spin() -> None:
        while True:
            pass

    result, error = execute(dog, time.monotonic() + 0.1, spin, (), memory_limit=None, label="s/b")
    assert isinstance(error, Timeout) and error.detail == {}
    assert re.fullmatch(r"s/b did not finish before its deadline \(it had \d+ ms\)", str(error)), str(error)
