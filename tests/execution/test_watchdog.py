"""The watchdog stops Python-level runaways at their deadline, re-raises when a script swallows the
timeout, runs cancel hooks, reports calls stuck in native code, and never lets a late timeout
surface in the runtime's own code."""
from __future__ import annotations

import threading
import time

import pytest

from vm.execution.watchdog import Watchdog
from vm.guard.context import SANDBOX_MARKER, ScriptTimeout, current


@pytest.fixture
def dog():
    stuck: list = []
    wd = Watchdog(grace_s=0.05, on_stuck=stuck.append)
    wd.stuck = stuck
    yield wd
    wd.close()


def test_a_loop_is_stopped(dog: Watchdog) -> None:
    def spin() -> None:
        while True:
            pass

    with pytest.raises(ScriptTimeout):
        dog.run(time.monotonic() + 0.05, spin)


SWALLOW = """
def swallow(box):
    while True:
        try:
            while True:
                pass
        except BaseException:
            box.append(1)
"""


def test_a_script_that_keeps_catching_the_timeout_is_stopped(dog: Watchdog) -> None:
    # Script code (its frames see the sandbox's marker) that catches every timeout and loops again:
    # re-raising cannot win, so past the grace the watchdog stops it line by line.
    import builtins

    namespace = {"__builtins__": {**vars(builtins), SANDBOX_MARKER: True}}
    exec(compile(SWALLOW, "features.py", "exec"), namespace)
    caught: list = []
    with pytest.raises(ScriptTimeout):
        dog.run(time.monotonic() + 0.05, namespace["swallow"], caught)
    assert caught, "the script never saw its timeout"
    assert len(dog.stuck) == 1


def test_a_call_that_finishes_in_time_returns_its_value(dog: Watchdog) -> None:
    assert dog.run(time.monotonic() + 5, lambda x: x * 2, 21) == 42


def test_no_late_timeout_after_the_call(dog: Watchdog) -> None:
    # Calls ending right at their deadline, over and over: the runtime code after each one must
    # never see a ScriptTimeout that was meant for the script.
    def short() -> None:
        end = time.monotonic() + 0.002
        while time.monotonic() < end:
            pass

    for _ in range(200):
        try:
            dog.run(time.monotonic() + 0.002, short)
        except ScriptTimeout:
            pass
        for _ in range(2000):  # the runtime's own code, after the call
            pass


def test_cancel_hooks_run_at_the_deadline(dog: Watchdog) -> None:
    fired = threading.Event()

    def wait_for_cancel() -> bool:
        ctx = current()
        assert ctx is not None and ctx.remaining() > 0
        ctx.add_cancel(fired.set)
        return fired.wait(5)  # a native call that returns when cancelled (like ONNX Runtime's terminate)

    with pytest.raises(ScriptTimeout):  # the hook ended the wait; the timeout follows it
        dog.run(time.monotonic() + 0.05, wait_for_cancel)
    assert fired.is_set()
    assert current() is None


def test_a_native_call_past_the_grace_is_reported_stuck(dog: Watchdog) -> None:
    release = threading.Event()
    result: list = []

    def native() -> None:
        release.wait(5)  # releases the GIL: no asynchronous exception can interrupt it

    t = threading.Thread(target=lambda: result.append(_run(dog, native)))
    t.start()
    deadline = time.monotonic() + 5
    while not dog.stuck and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    t.join()
    assert len(dog.stuck) == 1 and dog.stuck[0].stuck


def _run(dog: Watchdog, fn) -> str:
    try:
        dog.run(time.monotonic() + 0.05, fn)
        return "returned"
    except ScriptTimeout:
        return "timeout"
