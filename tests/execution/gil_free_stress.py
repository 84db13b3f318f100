"""Stress each native mechanism from several threads at once; run as a script under any interpreter
(tests/execution/test_free_threading.py runs it under free-threaded 3.14t with the GIL off).

    python gil_free_stress.py SECONDS_PER_MECHANISM  ->  one JSON line: what went wrong, per mechanism

verifier  threads verify different code objects (small and large, accepted and refused) and compare
          each verdict with the one computed alone first (the C pass once shared a static scratch buffer)
handoff   threads run calls that end right at their deadline through one Watchdog: a ScriptTimeout
          must never surface after Watchdog.run returned (the run/raise hand-off)
kill      threads run script code that keeps catching its timeout: each must still be stopped, while
          the kill trace is switched on and off for the others (the kill-trace globals)
freeze    threads freeze fresh classes while others write to them: once freeze_type returned, every
          write must be refused (the type lock)
"""
from __future__ import annotations

import builtins
import json
import sys
import threading
import time
import types

from vm.errors import PolicyError
from vm.execution.watchdog import Watchdog
from vm.guard import _guard
from vm.guard.context import SANDBOX_MARKER, ScriptTimeout
from vm.policy.verifier import verify_module_code

THREADS = 4


def _in_threads(body, seconds: float) -> int:
    """Run body(stop_at) on THREADS threads at once; the sum of what they return."""
    start = threading.Barrier(THREADS)
    counts = [0] * THREADS

    def run(k: int) -> None:
        start.wait()
        counts[k] = body(time.monotonic() + seconds)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def _codes() -> list[tuple[types.CodeType, str]]:
    big = "def f(x):\n" + "".join(f"    x = x + {i} if x > {i} else [x, {i}]\n" for i in range(300)) + \
        "    return x\n"
    small = "def g(a, b):\n    return a + b\n"
    codes = [compile(big, "features.py", "exec"), compile(small, "features.py", "exec")]
    inner = next(c for c in codes[1].co_consts if isinstance(c, types.CodeType))
    raw = bytearray(inner.co_code)
    loads = [i for i in range(0, len(raw), 2) if raw[i] in {o for n, o in _opmap().items() if n.startswith("LOAD_FAST")}]
    raw[loads[-1]], raw[loads[-1] + 1] = _opmap()["NOP"], 0  # the stack runs dry: refused
    bad = codes[1].replace(co_consts=tuple(inner.replace(co_code=bytes(raw)) if c is inner else c
                                           for c in codes[1].co_consts))
    out = []
    for code in (*codes, bad):
        out.append((code, _verdict(code)))
    return out


def _opmap() -> dict[str, int]:
    import dis

    return dis.opmap


def _verdict(code: types.CodeType) -> str:
    try:
        verify_module_code(code, filename="features.py", bundle_modules=frozenset({"features"}))
        return "ok"
    except PolicyError as exc:
        return str(exc)


def verifier(seconds: float) -> int:
    cases = _codes()
    assert len({v for _, v in cases}) == 2, "the cases must include an accepted and a refused one"

    def body(stop_at: float) -> int:
        wrong, k = 0, 0
        while time.monotonic() < stop_at:
            code, expected = cases[k % len(cases)]
            wrong += _verdict(code) != expected
            k += 1
        return wrong

    return _in_threads(body, seconds)


def handoff(seconds: float) -> int:
    dog = Watchdog(grace_s=1.0)

    def short() -> None:
        end = time.monotonic() + 0.0005
        while time.monotonic() < end:
            pass

    def body(stop_at: float) -> int:
        late = 0
        while time.monotonic() < stop_at:
            try:
                try:
                    dog.run(time.monotonic() + 0.0005, short)
                except ScriptTimeout:
                    pass
                for _ in range(500):  # the runtime's own code, after the call
                    pass
            except ScriptTimeout:
                late += 1
        return late

    try:
        return _in_threads(body, seconds)
    finally:
        dog.close()


SWALLOW = """
def swallow():
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass
"""


def kill(seconds: float) -> int:
    dog = Watchdog(grace_s=0.02)
    namespace: dict = {"__builtins__": {**vars(builtins), SANDBOX_MARKER: True}}
    exec(compile(SWALLOW, "features.py", "exec"), namespace)

    def body(stop_at: float) -> int:
        wrong = 0
        while time.monotonic() < stop_at:
            try:
                dog.run(time.monotonic() + 0.01, namespace["swallow"])
                wrong += 1  # it cannot return
            except ScriptTimeout:
                pass
        return wrong

    try:
        return _in_threads(body, seconds)
    finally:
        dog.close()


def freeze(seconds: float) -> int:
    def body(stop_at: float) -> int:
        wrong = 0
        while time.monotonic() < stop_at:
            classes = [type(f"C{i}", (), {"a": i}) for i in range(20)]
            writer_stop = threading.Event()

            def write(classes: list[type] = classes, writer_stop: threading.Event = writer_stop) -> None:
                while not writer_stop.is_set():
                    for c in classes:
                        try:
                            c.b = 1
                        except TypeError:
                            pass

            w = threading.Thread(target=write)
            w.start()
            try:
                for c in classes:
                    _guard.freeze_type(c)
                    try:
                        c.a = -1
                        wrong += 1
                    except TypeError:
                        pass
            finally:
                writer_stop.set()
                w.join()
        return wrong

    return _in_threads(body, seconds)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    report = {name: fn(seconds) for name, fn in
              (("verifier", verifier), ("handoff", handoff), ("kill", kill), ("freeze", freeze))}
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(json.dumps({"wrong": report, "gil_enabled": gil, "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
