"""Red team, shared library state: in thread mode every bundle and the host share one interpreter,
so nothing a script does may change state another bundle or the host reads, nor crash the process
through library C code. One test per class of attack, several variants each; each variant's script
returns a string starting with ``ESCAPED`` if, and only if, the attack worked.

Drives scripts with tests/escapes/test_escapes.py's helpers (pack with the test key, load, run).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_escapes import MARKER, SYSTEM, _fast_compiler, _two_bundles, build  # noqa: F401 - a fixture

from vm.errors import PolicyError, ScriptError
from vm.host.runtime import Runtime


def _config(keys: Path) -> dict:
    return {"keys": keys, "deadline_ms": 5000, "isolation": "thread"}


def _refused(value: object) -> bool:
    """A typed refusal: a policy error, or a script error of a type the library raises."""
    return isinstance(value, PolicyError) or (
        isinstance(value, ScriptError) and value.detail.get("type") in ("TypeError", "AttributeError"))


def _run_one(tmp_path: Path, keys: Path, name: str, source: str) -> object:
    bundle = build(tmp_path, keys, name, {"features.py": textwrap.dedent(source)}, skip=False, business="b")
    with Runtime(_config(keys)) as rt:
        rt.load(bundle)
        try:
            return rt.infer(SYSTEM, "b", {})
        except (PolicyError, ScriptError) as exc:
            return exc


# -- numpy arrays of Python objects: their comparison callbacks are a use-after-free door ---------

_OBJECT_ARRAYS = {
    "explicit-dtype": "np.array([1, 'a'], dtype=object)",
    "implicit-script-objects": "np.array([Key(1), Key(2)])",
    "ragged-list": "np.asarray([[1], [1, 2]], dtype=object)",
    "dtype-O": "np.zeros(3, dtype=np.dtype('O'))",
    "structured-object-field": "np.zeros(2, dtype=[('a', 'O'), ('b', 'f8')])",
    "structured-dtype-ctor": "np.dtype([('a', object)])",
    "full-of-objects": "np.full(3, Key(1))",
    "stack-of-objects": "np.stack([np.zeros(2), [Key(1), Key(2)]])",
    "sort-mutating-lt": "np.sort(np.array([Key(i) for i in range(64)], dtype=object))",
}


@pytest.mark.parametrize("variant", list(_OBJECT_ARRAYS))
def test_object_arrays_are_refused(variant: str, tmp_path: Path, keys_dir: Path) -> None:
    value = _run_one(tmp_path, keys_dir, f"objarr-{variant}", f"""
        import numpy as np

        HELD = []

        class Key:
            def __init__(self, v):
                self.v = v

            def __lt__(self, other):
                if HELD:
                    HELD[0][:] = 0  # frees the elements numpy is comparing
                return self.v < other.v

        def entry(inputs):
            made = {_OBJECT_ARRAYS[variant]}
            HELD.append(made)
            return "{MARKER}: made " + str(made.dtype if hasattr(made, "dtype") else made)
        """)
    assert _refused(value), value


# -- containers whose keys mutate them during a C operation ----------------------------------------

_ODICT_OPS = {
    "move_to_end": "od.move_to_end(Key())",
    "pop": "od.pop(Key(), None)",
    "popitem": "od.popitem()",
    "delitem": "od.__delitem__(Key())",
    "copy-eq": "od.copy() == od",
}


@pytest.mark.parametrize("op", list(_ODICT_OPS))
def test_mutating_keys_do_not_crash_the_process(op: str, tmp_path: Path, keys_dir: Path) -> None:
    """OrderedDict (the C one) crashes CPython 3.11-3.13 when a key's __eq__ clears the dict during
    these operations; dict, set, list.sort, deque, heapq and bisect do not (checked in subprocesses).
    The host process runs in a child here, so a crash is a failed test, not a dead test run."""
    bundle = build(tmp_path, keys_dir, f"odict-{op}", {"features.py": textwrap.dedent(f"""
        from collections import OrderedDict

        ARMED = []
        od = OrderedDict()

        class Key:
            def __hash__(self):
                return 0

            def __eq__(self, other):
                if ARMED:
                    od.clear()
                return self is other

        def entry(inputs):
            for _ in range(200):
                ARMED.clear()
                od.clear()
                od.update((Key(), i) for i in range(10))
                ARMED.append(1)
                try:
                    {_ODICT_OPS[op]}
                except (KeyError, RuntimeError):
                    pass
            return "survived"
        """)}, skip=False, business="b")
    child = textwrap.dedent(f"""
        import json, sys
        from vm.host.runtime import Runtime
        with Runtime({{"keys": {str(keys_dir)!r}, "deadline_ms": 20000, "isolation": "thread"}}) as rt:
            rt.load({str(bundle)!r})
            print(json.dumps(rt.infer({SYSTEM!r}, "b", {{}})))
        """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the host process died ({done.returncode}): {done.stderr[-2000:]}"
    assert json.loads(done.stdout.strip().splitlines()[-1]) == "survived"


# -- attributes of shared library objects ---------------------------------------------------------

_SHARED_OBJECTS = {
    # id: (import, expression naming a shared library object)
    "module-function": ("import statistics", "statistics.mean"),
    "numpy-dispatcher": ("import numpy", "numpy.sum"),
    "numpy-ufunc": ("import numpy", "numpy.add"),
    "numpy-linalg-function": ("import numpy", "numpy.linalg.norm"),
    "class-method": ("import collections", "collections.Counter.most_common"),
    "dunder-init-of-returned-class": ("import dataclasses", "type(dataclasses.field()).__init__"),
    "random-generator-factory": ("import numpy", "numpy.random.default_rng"),
    "typing-function": ("import typing", "typing.cast"),
    "singleton-instance": ("import dataclasses", "dataclasses.MISSING"),
}


@pytest.mark.parametrize("obj_id", list(_SHARED_OBJECTS))
def test_shared_object_attributes_do_not_cross_bundles(obj_id: str, tmp_path: Path, keys_dir: Path) -> None:
    imp, expr = _SHARED_OBJECTS[obj_id]
    a, b = _two_bundles(tmp_path, keys_dir, f"""
        {imp}

        def entry(inputs):
            try:
                setattr({expr}, "zz_probe", "{MARKER}: from bundle A")
            except (AttributeError, TypeError):
                return "refused"
            return "{MARKER}: set"
        """, f"""
        {imp}

        def entry(inputs):
            return getattr({expr}, "zz_probe", None)
        """)
    with Runtime(_config(keys_dir)) as rt:
        rt.load(a)
        rt.load(b)
        assert rt.infer("a", "b", {}) == "refused"
        assert rt.infer("v", "b", {}) is None


def test_numpy_type_info_caches_stay_the_hosts(tmp_path: Path, keys_dir: Path) -> None:
    """numpy caches one finfo/iinfo per type for the whole process, and reads finfo(...).eps itself
    (matrix_rank, pinv, lstsq): bundle A's change must reach neither bundle B nor the host."""
    import numpy as np

    eps = float(np.finfo(np.float32).eps)
    a, b = _two_bundles(tmp_path, keys_dir, """
        import numpy as np

        def entry(inputs):
            np.finfo(np.float32).eps = 42.0
            np.finfo(np.float64).tiny = 42.0
            np.iinfo(np.int32).note = 42
            return float(np.finfo(np.float32).eps)
        """, """
        import numpy as np

        def entry(inputs):
            return [float(np.finfo(np.float32).eps), float(np.finfo(np.float64).tiny),
                    hasattr(np.iinfo(np.int32), "note"), int(np.linalg.matrix_rank(np.eye(3, dtype=np.float32)))]
        """)
    try:
        with Runtime(_config(keys_dir)) as rt:
            rt.load(a)
            rt.load(b)
            rt.infer("a", "b", {})
            assert rt.infer("v", "b", {}) == [eps, float(np.finfo(np.float64).tiny), False, 3]
        assert float(np.finfo(np.float32).eps) == eps
    finally:
        np.finfo._finfo_cache.clear()


def test_module_containers_do_not_cross_bundles(tmp_path: Path, keys_dir: Path) -> None:
    import hashlib

    before = set(hashlib.algorithms_available), set(hashlib.algorithms_guaranteed)
    a, b = _two_bundles(tmp_path, keys_dir, """
        import hashlib

        def entry(inputs):
            hashlib.algorithms_available.add("zz_probe")
            hashlib.algorithms_guaranteed.clear()
            return 1
        """, """
        import hashlib

        def entry(inputs):
            return ["zz_probe" in hashlib.algorithms_available, "sha256" in hashlib.algorithms_guaranteed]
        """)
    try:
        with Runtime(_config(keys_dir)) as rt:
            rt.load(a)
            rt.load(b)
            rt.infer("a", "b", {})
            assert rt.infer("v", "b", {}) == [False, True]
        assert (hashlib.algorithms_available, hashlib.algorithms_guaranteed) == before
    finally:
        hashlib.algorithms_available.discard("zz_probe")
        hashlib.algorithms_guaranteed.update(before[1])


# -- ABC registration through library code -------------------------------------------------------

_REGISTER_CALLS = {
    "heapq-merge-key": "list(heapq.merge([list], key=collections.abc.Hashable.register))",
    "heapq-nsmallest-key": "heapq.nsmallest(1, [list, list], key=collections.abc.Hashable.register)",
    "heapq-nlargest-key": "heapq.nlargest(1, [list, list], key=collections.abc.Hashable.register)",
}


@pytest.mark.parametrize("via", list(_REGISTER_CALLS))
def test_abc_registration_through_library_code_is_refused(via: str, tmp_path: Path, keys_dir: Path) -> None:
    import collections.abc

    a, b = _two_bundles(tmp_path, keys_dir, f"""
        import collections.abc
        import heapq

        def entry(inputs):
            {_REGISTER_CALLS[via]}
            return "{MARKER}: registered"
        """, """
        import collections.abc

        def entry(inputs):
            return isinstance([], collections.abc.Hashable)
        """)
    try:
        with Runtime(_config(keys_dir)) as rt:
            rt.load(a)
            rt.load(b)
            with pytest.raises(PolicyError, match="register"):
                rt.infer("a", "b", {})
            assert rt.infer("v", "b", {}) is False, "bundle A's ABC registration reached bundle B"
    finally:
        collections.abc.Hashable._abc_registry_clear()
        collections.abc.Hashable._abc_caches_clear()
    assert not isinstance([], collections.abc.Hashable)


# -- typing's process-wide subscription caches ------------------------------------------------------

_ALIASES = {
    # id: (subscription with the script's lookalike, the same with int, as the host writes it)
    "List": ("typing.List[Fake()]", lambda t: t.List[int]),
    "Dict": ("typing.Dict[str, Fake()]", lambda t: t.Dict[str, int]),
    "Optional": ("typing.Optional[Fake()]", lambda t: t.Optional[int]),
    "Union": ("typing.Union[Fake(), str]", lambda t: t.Union[int, str]),
    "Tuple": ("typing.Tuple[Fake(), ...]", lambda t: t.Tuple[int, ...]),
    "Callable": ("typing.Callable[[Fake()], str]", lambda t: t.Callable[[int], str]),
}


@pytest.mark.parametrize("alias", list(_ALIASES))
def test_typing_caches_do_not_hand_out_script_objects(alias: str, tmp_path: Path, keys_dir: Path) -> None:
    """A script object that equals ``int`` (and hashes like it) must not become the argument of the
    host's and other bundles' ``List[int]``: its methods would run in their threads."""
    import typing

    script, host = _ALIASES[alias]
    a, b = _two_bundles(tmp_path, keys_dir, f"""
        import typing

        class Fake:
            def __call__(self):
                return None

            def __hash__(self):
                return hash(int)

            def __eq__(self, other):
                return True

        def entry(inputs):
            return str({script})
        """, f"""
        import typing

        def entry(inputs):
            return str({script.replace("Fake()", "int")})
        """)
    for clear in typing._cleanups:
        clear()
    try:
        with Runtime(_config(keys_dir)) as rt:
            rt.load(a)
            rt.load(b)
            rt.infer("a", "b", {})
            assert "Fake" not in rt.infer("v", "b", {}), "bundle B got bundle A's object"
        assert "Fake" not in repr(host(typing)), "the host got a script's object from typing's cache"
    finally:
        for clear in typing._cleanups:
            clear()


def test_flag_combinations_do_not_cross_bundles(tmp_path: Path, keys_dir: Path) -> None:
    """A Flag enum caches each combination of its members for the whole process, keyed by value:
    an int subclass whose ``__ror__`` returns itself would be another bundle's ``re.I | ...``."""
    a, b = _two_bundles(tmp_path, keys_dir, """
        import re

        class Evil(int):
            def __ror__(self, other):
                return Evil(int(self) | int(other))

            def __repr__(self):
                return "Evil"

        def entry(inputs):
            made = re.I | Evil(1 << 20)
            return repr(getattr(made, "value", made))
        """, """
        import re

        def entry(inputs):
            made = re.I | (1 << 20)
            return repr(getattr(made, "value", made))
        """)
    with Runtime(_config(keys_dir)) as rt:
        rt.load(a)
        rt.load(b)
        rt.infer("a", "b", {})
        assert "Evil" not in rt.infer("v", "b", {}), "bundle B got bundle A's object from the flag cache"
