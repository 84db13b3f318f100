"""The Python API end to end: load, infer, typed errors with script locations, and runaway
scripts (loops, recursion, memory bombs, regexes, long C calls) stopped while the runtime keeps
serving."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from vm.errors import (
    BadInput,
    Closed,
    NotFound,
    PolicyError,
    ResourceExhausted,
    ScriptError,
    Timeout,
)
from vm.host.runtime import Runtime

FEATURES = """
import math
from collections import Counter
from dataclasses import dataclass, field

from pkg.util import double
import helpers


@dataclass(order=True)
class Item:
    score: float
    name: str = field(compare=False)


class Window:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list = []

    def __len__(self) -> int:
        return len(self.items)

    def push(self, x):
        self.items.append(x)
        if len(self.items) > self.size:
            self.items.pop(0)
        return self


def entry(inputs: dict):
    w = Window(3)
    for x in inputs["xs"]:
        w.push(x)
    items = sorted(Item(math.sqrt(x), f"i{x}") for x in inputs["xs"])
    kinds = Counter(inputs.get("kinds", []))
    return {"window": w.items, "n": len(w), "best": items[-1].name, "kinds": dict(kinds),
            "double": double(inputs["xs"][0]), "tag": helpers.tag()}


def fail(inputs):
    data = {"a": 1}
    return data["missing"]


def loop(inputs):
    n = 0
    while True:
        n += 1


def swallow(inputs):
    while True:
        try:
            while True:
                pass
        except Exception:
            pass


def recurse(inputs):
    def f(n):
        return f(n + 1) + 1
    return f(0)


def bomb(inputs):
    return len("x" * inputs["n"])


def list_bomb(inputs):
    out = []
    while True:
        out.append("y" * 1000)


def long_c_call(inputs):
    return sum(range(10 ** 12))


def regex(inputs):
    import re
    return bool(re.match(r"(a|aa)+$", "a" * 60 + "b"))


def pow_bomb(inputs):
    return pow(10, 10 ** 9) % 7


def echo(inputs):
    return inputs


def bad_result(inputs):
    return object()


def forbidden_getattr(inputs):
    return getattr(inputs, "__class__")
"""

ENTRIES = {name: f"features:{name}" for name in (
    "entry", "fail", "loop", "swallow", "recurse", "bomb", "list_bomb", "long_c_call", "regex",
    "pow_bomb", "echo", "bad_result", "forbidden_getattr")}
FILES = {
    "features.py": FEATURES,
    "helpers.py": "def tag():\n    return 'h'\n",
    "pkg/__init__.py": "",
    "pkg/util.py": "def double(x):\n    return 2 * x\n",
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Path:
    from conftest import BundleMaker

    return BundleMaker(tmp_path_factory.mktemp("rt"), keys_dir)(FILES, entries=ENTRIES)


@pytest.fixture(scope="module", params=["process", "thread"])
def rt(bundle: Path, keys_dir: Path, request: pytest.FixtureRequest):
    """The same runtime in both isolation modes: the same results and the same error codes."""
    runtime = Runtime({"keys": keys_dir, "deadline_ms": 300, "memory_limit_mb": 64, "workers": 2,
                       "isolation": request.param})
    info = runtime.load(bundle)
    assert info["name"] == "test" and "entry" in info["entries"]
    yield runtime
    runtime.close()


def healthy(rt: Runtime) -> None:
    assert rt.infer("s", "echo", {"k": [1, 2]}) == {"k": [1, 2]}


def test_ordinary_code_runs(rt: Runtime) -> None:
    out = rt.infer("s", "entry", {"xs": [4, 9, 16, 1], "kinds": ["a", "b", "a"]})
    assert out == {"window": [9, 16, 1], "n": 3, "best": "i16", "kinds": {"a": 2, "b": 1}, "double": 8,
                   "tag": "h"}


def test_script_error_names_file_and_line(rt: Runtime) -> None:
    with pytest.raises(ScriptError) as info:
        rt.infer("s", "fail", {})
    err = info.value
    assert err.code == 6
    assert str(err).startswith("features.py:")
    assert "KeyError" in str(err) and "missing" in str(err)
    line = err.detail["line"]
    assert FEATURES.splitlines()[line - 1].strip() == 'return data["missing"]'
    assert err.detail["type"] == "KeyError"


def test_unknown_route_and_bad_inputs(rt: Runtime) -> None:
    with pytest.raises(NotFound):
        rt.infer("s", "nope", {})
    with pytest.raises(NotFound):
        rt.infer("other", "entry", {})
    with pytest.raises(BadInput):
        rt.infer("s", "echo", {"x": object()})
    with pytest.raises(BadInput):
        rt.infer_msgpack("s", "echo", b"\xc1")
    with pytest.raises(BadInput):
        rt.infer_msgpack("s", "echo", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(BadInput):
        rt.infer(None, "echo", {})  # type: ignore[arg-type]


@pytest.mark.parametrize("business", ["loop", "swallow", "long_c_call", "regex"])
def test_runaways_time_out_and_the_runtime_keeps_serving(rt: Runtime, business: str) -> None:
    with pytest.raises(Timeout):
        rt.infer("s", business, {})
    healthy(rt)


@pytest.mark.parametrize("business, inputs", [
    ("recurse", {}), ("bomb", {"n": 10 ** 10}), ("list_bomb", {}),
])
def test_resource_bombs_are_stopped(rt: Runtime, business: str, inputs: dict) -> None:
    with pytest.raises((ResourceExhausted, Timeout)) as info:
        rt.infer("s", business, inputs, deadline_ms=5000)
    assert info.value.code in (7, 11)
    healthy(rt)


def test_memory_bomb_is_a_resource_error(rt: Runtime) -> None:
    with pytest.raises(ResourceExhausted):
        rt.infer("s", "bomb", {"n": 10 ** 10})


def test_huge_pow_is_refused(rt: Runtime) -> None:
    with pytest.raises(ResourceExhausted, match=r"WorkLimitExceeded: pow\(\) result would exceed"):
        rt.infer("s", "pow_bomb", {})


def test_unserialisable_result(rt: Runtime) -> None:
    with pytest.raises(ScriptError, match="serialis"):
        rt.infer("s", "bad_result", {})


def test_guarded_getattr_is_a_policy_error(rt: Runtime) -> None:
    with pytest.raises(PolicyError, match="__class__"):
        rt.infer("s", "forbidden_getattr", {})


def test_concurrent_calls(rt: Runtime) -> None:
    results, errors = [], []

    def worker(i: int) -> None:
        try:
            for j in range(20):
                results.append(rt.infer("s", "echo", {"i": i, "j": j}, deadline_ms=5000))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted((r["i"], r["j"]) for r in results) == [(i, j) for i in range(4) for j in range(20)]


def test_a_script_that_swallows_its_timeout_is_stopped(make_bundle, keys_dir: Path) -> None:
    # Bare except (refused by the source policy, so packed without it) and a context manager that
    # suppresses everything: the watchdog's last resort stops the script, and no worker stays stuck.
    source = """
class Shield:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


def entry(inputs):
    while True:
        with Shield():
            try:
                while True:
                    pass
            except:
                pass
"""
    path = make_bundle({"features.py": source}, skip_policy=True)
    with Runtime({"keys": keys_dir, "deadline_ms": 100, "grace_ms": 50}) as runtime:
        runtime.load(path)
        with pytest.raises(Timeout):
            runtime.infer("s", "b", {})
        deadline = time.monotonic() + 5
        while runtime.stats()["stuck_now"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runtime.stats()["stuck_now"] == 0


def test_closed_runtime(bundle: Path, keys_dir: Path) -> None:
    runtime = Runtime({"keys": keys_dir})
    runtime.load(bundle)
    runtime.close()
    runtime.close()
    with pytest.raises(Closed):
        runtime.infer("s", "echo", {})
    with pytest.raises(Closed):
        runtime.load(bundle)


def test_bad_config(keys_dir: Path) -> None:
    with pytest.raises(BadInput, match="keys"):
        Runtime({})
    with pytest.raises(BadInput, match="deadline_ms"):
        Runtime({"keys": keys_dir, "deadline_ms": -1})
    with pytest.raises(BadInput, match="unknown"):
        Runtime({"keys": keys_dir, "bogus": 1})
    with pytest.raises(NotFound):
        Runtime({"keys": "/nonexistent/keys"})


def test_keys_as_bytes_and_dict(bundle: Path, keys_dir: Path) -> None:
    raw = (keys_dir / "device.json").read_bytes()
    for spec in (raw, keys_dir / "device.json", str(keys_dir)):
        with Runtime({"keys": spec}) as runtime:
            runtime.load(bundle.read_bytes())
            assert runtime.infer("s", "echo", {"a": 1}) == {"a": 1}


def test_module_level_error_fails_the_load(make_bundle, keys_dir: Path) -> None:
    path = make_bundle({"features.py": "x = 1\ny = x / 0\n\ndef entry(inputs):\n    return 1\n"})
    with Runtime({"keys": keys_dir}) as runtime:
        with pytest.raises(ScriptError, match="features.py:2: ZeroDivisionError"):
            runtime.load(path)
        assert runtime.bundles() == []


def test_missing_entry_function(make_bundle, keys_dir: Path) -> None:
    path = make_bundle({"features.py": "def other(inputs):\n    return 1\n"}, skip_policy=True)  # pack refuses it
    with Runtime({"keys": keys_dir}) as runtime, pytest.raises(NotFound, match="entry"):
        runtime.load(path)


def test_new_version_replaces_routes(make_bundle, keys_dir: Path) -> None:
    v1 = make_bundle({"features.py": "def entry(inputs):\n    return 1\n"}, version="1.0.0")
    v2 = make_bundle({"features.py": "def entry(inputs):\n    return 2\n"}, version="1.1.0")
    with Runtime({"keys": keys_dir}) as runtime:
        runtime.load(v1)
        assert runtime.infer("s", "b", {}) == 1
        runtime.load(v2)
        assert runtime.infer("s", "b", {}) == 2


def test_two_bundles_cannot_claim_one_route(make_bundle, keys_dir: Path) -> None:
    a = make_bundle({"features.py": "def entry(inputs):\n    return 'a'\n"}, name="a")
    b = make_bundle({"features.py": "def entry(inputs):\n    return 'b'\n"}, name="b")
    with Runtime({"keys": keys_dir}) as runtime:
        runtime.load(a)
        with pytest.raises(BadInput, match="already served"):
            runtime.load(b)
        assert runtime.infer("s", "b", {}) == "a"


def test_print_goes_to_the_log(make_bundle, keys_dir: Path) -> None:
    path = make_bundle({"features.py": "def entry(inputs):\n    print('hello', 42)\n    return 0\n"})
    lines: list[tuple[str, str]] = []
    with Runtime({"keys": keys_dir, "log": lambda bundle, line: lines.append((bundle, line))}) as runtime:
        runtime.load(path)
        runtime.infer("s", "b", {})
    assert lines == [("test", "hello 42")]


def test_unload(make_bundle, keys_dir: Path) -> None:
    path = make_bundle({"features.py": "def entry(inputs):\n    return 'here'\n"})
    with Runtime({"keys": keys_dir}) as runtime:
        runtime.load(path)
        assert runtime.infer("s", "b", {}) == "here"
        runtime.unload("test")
        assert runtime.bundles() == []
        with pytest.raises(NotFound):
            runtime.infer("s", "b", {})
        with pytest.raises(NotFound):
            runtime.unload("test")
        runtime.load(path)
        assert runtime.infer("s", "b", {}) == "here"
