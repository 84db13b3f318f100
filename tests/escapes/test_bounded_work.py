"""Bounded C work (issue 14): in thread mode no single C call on script-chosen sizes may hold the
worker far past its deadline. The deadline guard raises between bytecodes, and while one C call
holds the interpreter lock no other Python thread (the watchdog, the caller) even runs; so every
variant below ran for tens of seconds (or hours) in one C call before the runtime bounded it.

Each class of attack has several variants. Each must end with a typed ``timeout`` or ``resource``
error, and the worker must be free again soon after (the runtime reports no stuck worker). The
wall-clock bound is a hang guard only (10 s for a 50 ms deadline), never a measure of speed: the
sizes are chosen so that an unbounded run takes far longer than the guard.

How each class is bounded (docs/security.md, "Long C calls"):

- big-integer products and powers (`*`, `**`, `round`, `math.prod`, `reduce(operator.mul)`) allocate
  as they go, and the allocator refuses a call's large allocations once its deadline has passed;
  powers are also refused up front above 2^22 result bits, whatever the spelling;
- division, remainder, divmod and modular powers do not allocate as they go: operands whose work
  would be too large for one call are refused (`WorkLimitExceeded`, a resource error);
- long iterators: `itertools.chain` and non-int membership in long ranges run through the
  interpreter loop;
- hash-colliding keys: the set or dict grows its table as it fills, and those allocations are
  refused past the deadline, so the quadratic insertion stops within a few times the time spent.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_escapes import build

from vm.errors import BadInput, EdgeError, ResourceExhausted, Timeout
from vm.host.runtime import Runtime

SYSTEM = "bounded"
DEADLINE_MS = 50
HANG_GUARD_S = 10.0
PRELUDE = "import collections\nimport enum\nimport functools\nimport itertools\nimport math\nimport operator\n\n"
# hash(P * k) == 0 for every int k: all keys land on one probe sequence
COLLIDING = "P = (1 << 61) - 1\nkeys = [P * k for k in range(60_000)]\n"


@pytest.fixture(scope="module")
def rt(keys_dir: Path) -> Iterator[Runtime]:
    runtime = Runtime({"keys": keys_dir, "deadline_ms": DEADLINE_MS, "isolation": "thread"})
    yield runtime
    runtime.close()


def attack(rt: Runtime, tmp_path: Path, keys_dir: Path, name: str, body: str, *, setup: str = "") -> EdgeError:
    """Pack ``body`` as the entry of bundle ``name``, call it once, and return the typed error it
    ended with, after checking that the call returned and the worker was free within the guard."""
    source = PRELUDE + setup + "\n\ndef entry(inputs):\n" + textwrap.indent(textwrap.dedent(body), "    ") + \
        "\n    return 'finished'\n"
    bundle = build(tmp_path, keys_dir, name, {"features.py": source}, skip=False, system=SYSTEM, business=name)
    rt.load(bundle)
    start = time.monotonic()
    try:
        value: object = rt.infer(SYSTEM, name, {})
    except EdgeError as exc:
        value = exc
    answered = time.monotonic() - start
    while rt.stats()["stuck_now"] and time.monotonic() - start < HANG_GUARD_S:
        time.sleep(0.02)
    held = time.monotonic() - start
    assert answered < HANG_GUARD_S and held < HANG_GUARD_S and rt.stats()["stuck_now"] == 0, (
        f"{name}: one C call held the worker: answered after {answered:.1f} s, free after {held:.1f} s "
        f"(deadline {DEADLINE_MS} ms)")
    assert isinstance(value, (Timeout, ResourceExhausted)), f"{name}: expected a timeout or resource error, got {value!r}"
    return value


def _cases(table: dict[str, str]) -> list:
    return [pytest.param(name, body, id=name) for name, body in table.items()]


# -- big-integer products and powers: stopped at the deadline, or refused up front ------------------

BIG_PRODUCTS = {
    "pow-operator": "x = 10 ** 20_000_000",
    "pow-builtin": "x = pow(10, 20_000_000)",
    "pow-operator-module": "x = operator.pow(10, 20_000_000)",
    "pow-dunder": "x = (10).__pow__(20_000_000)",
    "pow-rdunder": "x = (20_000_000).__rpow__(10)",
    "pow-inplace": "x = 10\nx **= 20_000_000",
    "mul-squaring": "x = (1 << 50_000_000) - 1\ny = x * x",
    "mul-operator-module": "x = (1 << 50_000_000) - 1\ny = operator.mul(x, x)",
    "mul-dunder": "x = (1 << 50_000_000) - 1\ny = x.__mul__(x)",
    "round-negative-digits": "x = round(7, -20_000_000)",
    "math-prod": "x = math.prod(range(1, 300_000))",
    "reduce-mul": "x = functools.reduce(operator.mul, range(1, 300_000))",
    # building the 25 MB exponent may itself pass a loaded machine's deadline: refused or stopped
    "pow-mod-big-exponent": "r = pow(3, 1 << 200_000_000, 1_000_003)",
}


@pytest.mark.parametrize(("name", "body"), _cases(BIG_PRODUCTS))
def test_big_integer_products_and_powers(name: str, body: str, rt: Runtime, tmp_path: Path, keys_dir: Path) -> None:
    attack(rt, tmp_path, keys_dir, name, body)


# -- division, remainder, modular powers: too much work for one call is refused -----------------------

BIG_DIVISIONS = {
    "floordiv": "q = a // b",
    "mod": "r = a % b",
    "divmod": "q, r = divmod(a, b)",
    "mod-dunder": "r = int.__mod__(a, b)",
    "rfloordiv-dunder": "q = b.__rfloordiv__(a)",
    "floordiv-operator-module": "q = operator.floordiv(a, b)",
    "intenum-floordiv": "q = Huge.A // b",
    "pow-mod-big-modulus": "r = pow(3, 1 << 30_000, (1 << 30_000) + 1)",
    "pow-mod-dunder": "r = (3).__pow__(1 << 30_000, (1 << 30_000) + 1)",
}
DIVISION_SETUP = ("a = 1 << 8_000_000\nb = (1 << 4_000_000) - 1\n\n\n"
                  "class Huge(enum.IntEnum):\n    A = 1 << 8_000_000\n")


@pytest.mark.parametrize(("name", "body"), _cases(BIG_DIVISIONS))
def test_big_integer_division_is_refused(name: str, body: str, rt: Runtime, tmp_path: Path, keys_dir: Path) -> None:
    error = attack(rt, tmp_path, keys_dir, name, body, setup=DIVISION_SETUP)
    assert isinstance(error, ResourceExhausted) and error.detail.get("type") == "WorkLimitExceeded", error


# -- long iterators consumed by C functions ---------------------------------------------------------

CHAIN = "itertools.chain(*[range(1 << 20)] * 2000)"
LONG_ITERATORS = {
    "sum-chain": f"x = sum({CHAIN})",
    "max-chain": f"x = max({CHAIN})",
    "set-chain": f"x = set({CHAIN})",
    "counter-chain": f"x = collections.Counter({CHAIN})",
    "dict-fromkeys-chain": f"x = dict.fromkeys({CHAIN})",
    "deque-chain-from-iterable": "collections.deque(itertools.chain.from_iterable([range(1 << 20)] * 2000), maxlen=0)",
    "min-chain": f"x = min({CHAIN})",
    "frozenset-chain": f"x = frozenset({CHAIN})",
    "range-contains-float": "x = 0.5 in range(3 * 10 ** 9)",
    "range-index-float": "x = range(3 * 10 ** 9).index(0.5)",
    "range-count-float": "x = range(3 * 10 ** 9).count(0.5)",
}


@pytest.mark.parametrize(("name", "body"), _cases(LONG_ITERATORS))
def test_long_iterators_in_c_consumers(name: str, body: str, rt: Runtime, tmp_path: Path, keys_dir: Path) -> None:
    attack(rt, tmp_path, keys_dir, name, body)


# -- sets and dicts of hash-colliding keys ----------------------------------------------------------

COLLISIONS = {
    "set-of-ints": "s = set(keys)",
    "frozenset-of-ints": "s = frozenset(keys)",
    "dict-fromkeys-ints": "d = dict.fromkeys(keys)",
    "dict-of-pairs": "d = dict(zip(keys, keys))",
    "counter-of-ints": "c = collections.Counter(keys)",
    "set-of-tuples": "s = set([(k,) for k in keys])",
    "set-update": "s = set()\ns.update(keys)",
}


@pytest.mark.parametrize(("name", "body"), _cases(COLLISIONS))
def test_hash_colliding_keys(name: str, body: str, rt: Runtime, tmp_path: Path, keys_dir: Path) -> None:
    attack(rt, tmp_path, keys_dir, name, body, setup=COLLIDING)


# -- what must keep working --------------------------------------------------------------------------

def test_ordinary_arithmetic_and_iteration_are_unchanged(rt: Runtime, tmp_path: Path, keys_dir: Path) -> None:
    """RSA-sized modular powers, modular inverses, big-but-reasonable integers, chains and long
    ranges give the same answers as plain Python; the caps do not touch the host's own arithmetic."""
    body = """
    m = (1 << 2048) - 159
    out = [pow(3, 65537, m) % 1000, pow(2, -1, 7), (1 << 100_000) % 7, divmod(10 ** 300, 7 ** 100)[1] % 1000,
           2 ** 1000 % 1000, math.prod(range(1, 200)) % 1000, sum(itertools.chain(range(5), [5])),
           list(itertools.chain.from_iterable([[1], (2,)])), 3.0 in range(10 ** 12), range(10 ** 12).index(7.0),
           range(10 ** 12).count(True), (10 ** 400) // (10 ** 200) == 10 ** 200]
    return out
    """
    source = PRELUDE + "\n\ndef entry(inputs):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    namespace: dict = {}
    exec(compile(source, "plain.py", "exec"), namespace)
    expected = namespace["entry"]({})
    bundle = build(tmp_path, keys_dir, "ordinary-ints", {"features.py": source}, skip=False, system=SYSTEM,
                   business="ordinary")
    rt.load(bundle)
    assert rt.infer(SYSTEM, "ordinary", {}) == expected
    x = 1 << 5_000_000  # outside a guarded call nothing is capped
    assert x ** 1 == x and (x * 3) // x == 3


# -- numpy: big work is bounded by the memory budget ---------------------------------------------------

NUMPY = {
    "ones-square": "np.ones((10 ** 5, 10 ** 5))",
    "outer": "np.add.outer(np.ones(10 ** 5), np.ones(10 ** 5))",
    "broadcast": "np.zeros((10 ** 5, 1)) * np.zeros(10 ** 5)",
}


@pytest.mark.parametrize(("name", "body"), _cases(NUMPY))
def test_numpy_big_work_is_a_resource_error(name: str, body: str, rt: Runtime, tmp_path: Path,
                                            keys_dir: Path) -> None:
    """A guard, not a hole: these were already refused by the memory budget before any work."""
    error = attack(rt, tmp_path, keys_dir, f"np-{name}", body, setup="import numpy as np\n")
    assert isinstance(error, ResourceExhausted), error


# -- the caller is never left blocked ------------------------------------------------------------------

def test_cli_exits_at_deadline_plus_grace_whatever_the_worker_does(tmp_path: Path, keys_dir: Path) -> None:
    """A C loop the runtime cannot stop (nested C iteration over memory-bounded data holds the
    interpreter lock: no Python thread can run) still ends `edgevm run --isolation thread` with the
    timeout's line and exit status (17) at deadline + grace."""
    source = "def entry(inputs):\n    return sum(map(sum, [range(1 << 20)] * inputs['n']))\n"
    bundle = build(tmp_path, keys_dir, "cli-spin", {"features.py": source}, skip=False, system=SYSTEM, business="spin")
    (tmp_path / "in.json").write_text(json.dumps({"n": 100_000}))
    cmd = [sys.executable, "-m", "vm.host.cli", "run", "--keys", str(keys_dir), "--isolation", "thread",
           "--deadline-ms", str(DEADLINE_MS), "--input", str(tmp_path / "in.json"), "--system", SYSTEM,
           "--business", "spin", str(bundle)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"edgevm run was still running {HANG_GUARD_S} s after a {DEADLINE_MS} ms deadline")
    assert done.returncode == 10 + Timeout.code, (done.returncode, done.stderr)
    assert "error[timeout/7]" in done.stderr and done.stdout == "", done.stderr


# -- an oversized input is refused before it is encoded ------------------------------------------------

def test_oversized_input_is_refused_before_it_is_encoded(rt: Runtime) -> None:
    """64 references to one 1 MiB string: 1 MiB in memory, 64 MiB on the wire (the limit is 16 MiB).
    The runtime refuses it without building the encoding (tracemalloc sees msgpack's buffer)."""
    chunk = "x" * (1 << 20)
    cases = [[chunk] * 64, {"rows": [[chunk] * 8] * 8}, {"blob": chunk.encode() * 17}]
    for inputs in cases:
        tracemalloc.start()
        try:
            with pytest.raises(BadInput, match="limit"):
                rt.infer(SYSTEM, "nothing-loaded", inputs)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, f"{peak} bytes allocated while refusing a {type(inputs).__name__} input"
