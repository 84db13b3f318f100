"""What the lockdown costs (a measurement, not a test): ``python tests/isolation/measure_lockdown.py``.

Each sample is a child forked from this process (which imported numpy, ONNX Runtime and the native
ops, like the zygote) that creates the workload's ORT session and a thread, then times
``lockdown.apply``, per combination of layers. One more child times syscalls and ORT runs before
and after its lockdown. The last line is JSON: medians in microseconds.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lockdown_workload as workload  # noqa: E402
from lockdown_harness import run_locked  # noqa: E402

FORKS = 20
VARIANTS = {
    "full": {},
    "no_landlock": {"landlock": False},
    "no_seccomp": {"seccomp": False},
    "fds_env_rlimits_only": {"landlock": False, "seccomp": False},
}


def timed_apply(options: dict) -> float:
    """µs that apply took in one fresh child (its own clock, read around the call)."""

    def prepare() -> tuple:
        p = workload.prepare()
        return p, time.perf_counter_ns()

    def check(state: tuple) -> float:
        return (time.perf_counter_ns() - state[1]) / 1000

    out = run_locked(check, prepare=prepare, keep=lambda s: (s[0].channel.fileno(), s[0].peer.fileno()),
                     **options)
    assert out.error is None, out.error
    return out.result


def per_call_us(fn, n: int) -> float:
    """Median over 5 rounds of the µs one call of fn takes."""
    rounds = []
    for _ in range(5):
        t = time.perf_counter_ns()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter_ns() - t) / n / 1000)
    return statistics.median(rounds)


def calls(p: workload.Prepared) -> dict:
    """Syscalls the filter allows without looking (getppid), after checking an argument
    (kill of itself), and refuses (stat of a path); and one ranking-model run."""
    x = np.random.default_rng(1).random((8, workload.DIM), dtype=np.float32)
    me = os.getpid()

    def refused_stat() -> None:
        try:
            os.stat("/")
        except OSError:
            pass

    return {
        "getppid": per_call_us(os.getppid, 100_000),
        "kill_self_0": per_call_us(lambda: os.kill(me, 0), 100_000),
        "stat_path": per_call_us(refused_stat, 50_000),
        "ort_run": per_call_us(lambda: p.session.run(None, {"X": x}), 2000),
    }


def main() -> None:
    apply_us = {}
    for name, options in VARIANTS.items():
        samples = [timed_apply(options) for _ in range(FORKS)]
        apply_us[name] = round(statistics.median(samples), 1)
    def before() -> tuple[workload.Prepared, dict]:
        p = workload.prepare()
        return p, calls(p)

    out = run_locked(lambda s: (s[1], calls(s[0])), prepare=before,
                     keep=lambda s: (s[0].channel.fileno(), s[0].peer.fileno()))
    assert out.error is None, out.error
    costs_before, costs_after = out.result
    print(f"apply, median of {FORKS} forks (µs): {apply_us}")
    for k in costs_before:
        print(f"{k:12} before {costs_before[k]:8.3f} µs   after {costs_after[k]:8.3f} µs")
    print(json.dumps({"apply_us": apply_us, "seccomp_instructions": out.applied["seccomp"],
                      "before_us": costs_before, "after_us": costs_after}))


if __name__ == "__main__":
    main()
