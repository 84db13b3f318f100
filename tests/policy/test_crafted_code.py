"""The verifier's structural rules, one per test: compile an allowed source, mutate its code object
the way an attacker holding a signing key could (one rule broken), and check that the load-time
verifier refuses it with a typed policy error naming the rule. One end-to-end case goes through a
signed bundle and ``Runtime.load``. Each mutation is found by instruction name, so a test that
cannot find its site on this interpreter is skipped with the reason."""
from __future__ import annotations

import dis
import marshal
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from vm.bundle.loader import MAGIC_HEX
from vm.errors import PolicyError
from vm.policy.verifier import verify_module_code

MODS = frozenset({"features"})
OP = dis.opmap
CO_GENERATOR = 0x20


def _module(text: str) -> types.CodeType:
    return compile(text, "features.py", "exec", dont_inherit=True)


def _function(text: str, name: str = "f") -> tuple[types.CodeType, types.CodeType]:
    outer = _module(text)
    inner = next(c for c in outer.co_consts if isinstance(c, types.CodeType) and c.co_name == name)
    return outer, inner


def _swap(outer: types.CodeType, old: types.CodeType, new: types.CodeType) -> types.CodeType:
    """``outer`` with its nested code object ``old`` (at any depth) replaced by ``new``."""
    consts = []
    for c in outer.co_consts:
        if c is old:
            consts.append(new)
        elif isinstance(c, types.CodeType):
            consts.append(_swap(c, old, new))
        else:
            consts.append(c)
    return outer.replace(co_consts=tuple(consts))


def _at(code: types.CodeType, opname: str, nth: int = 0) -> int:
    """The byte offset of the ``nth`` instruction named ``opname`` (skips the test if absent)."""
    found = [i.offset for i in dis.get_instructions(code) if i.opname == opname]
    if len(found) <= nth:
        pytest.skip(f"{opname} not emitted here by Python {sys.version_info[0]}.{sys.version_info[1]}")
    return found[nth]


def _edit(code: types.CodeType, change: Callable[[bytearray], None]) -> types.CodeType:
    raw = bytearray(code.co_code)
    change(raw)
    return code.replace(co_code=bytes(raw))


def _refused(code: types.CodeType, needle: str) -> None:
    with pytest.raises(PolicyError) as info:
        verify_module_code(code, filename="features.py", bundle_modules=MODS)
    assert info.value.name == "policy"
    assert needle in str(info.value), str(info.value)


def _accepted(code: types.CodeType) -> None:
    verify_module_code(code, filename="features.py", bundle_modules=MODS)


CLOSURE = "def f(a):\n    b = a + 1\n    def g():\n        return b\n    return g() + b\n"


def test_the_unmutated_sources_verify() -> None:
    for text in (CLOSURE, "def f(xs):\n    return [x for x in xs]\n", "def f(xs):\n    for x in xs:\n        pass\n",
                 "def f(xs):\n    yield from xs\n", "def f(a):\n    try:\n        return 1 / a\n    except Exception:\n"
                 "        return 0\n"):
        _accepted(_module(text))


def test_cell_read_of_a_plain_local_is_refused() -> None:
    # The example: LOAD_DEREF on a plain local reads an int as a cell (memory unsafety).
    outer, f = _function(CLOSURE)
    at = _at(f, "LOAD_DEREF")
    local = f.co_varnames.index("a")

    def change(raw: bytearray) -> None:
        raw[at + 1] = local

    _refused(_swap(outer, f, _edit(f, change)), "cell")


def test_plain_load_of_a_cell_slot_is_refused() -> None:
    if sys.version_info >= (3, 13):
        pytest.skip("3.13 reads cells with LOAD_FAST after MAKE_CELL in some positions")
    outer, f = _function(CLOSURE)
    at = _at(f, "LOAD_DEREF")

    def change(raw: bytearray) -> None:
        raw[at] = OP["LOAD_FAST"]

    _refused(_swap(outer, f, _edit(f, change)), "LOAD_FAST of a cell")


def test_missing_make_cell_is_refused() -> None:
    outer, f = _function(CLOSURE)
    at = _at(f, "MAKE_CELL")

    def change(raw: bytearray) -> None:
        raw[at], raw[at + 1] = OP["NOP"], 0

    _refused(_swap(outer, f, _edit(f, change)), "MAKE_CELL")


def test_missing_copy_free_vars_is_refused() -> None:
    outer, f = _function(CLOSURE)
    g = next(c for c in f.co_consts if isinstance(c, types.CodeType))
    at = _at(g, "COPY_FREE_VARS")

    def change(raw: bytearray) -> None:
        raw[at], raw[at + 1] = OP["NOP"], 0

    _refused(_swap(outer, g, _edit(g, change)), "COPY_FREE_VARS")


def test_generator_opcodes_outside_generator_code_are_refused() -> None:
    outer, f = _function("def f(xs):\n    yield from xs\n")
    _refused(_swap(outer, f, f.replace(co_flags=f.co_flags & ~CO_GENERATOR)), "generator")


def test_list_append_to_a_tuple_is_refused() -> None:
    # [x for x in xs] with BUILD_LIST turned into BUILD_TUPLE: LIST_APPEND would write into a tuple.
    outer = _module("def f(xs):\n    return [x for x in xs]\n")
    f = next(c for c in outer.co_consts if isinstance(c, types.CodeType))
    comp = next((c for c in f.co_consts if isinstance(c, types.CodeType)), f)  # 3.12+: inlined in f
    at = _at(comp, "BUILD_LIST")

    def change(raw: bytearray) -> None:
        raw[at] = OP["BUILD_TUPLE"]

    _refused(_swap(outer, comp, _edit(comp, change)), "not a list")


def test_for_iter_over_a_non_iterator_is_refused() -> None:
    outer, f = _function("def f(xs):\n    for x in xs:\n        pass\n")
    at = _at(f, "GET_ITER")

    def change(raw: bytearray) -> None:
        raw[at], raw[at + 1] = OP["NOP"], 0

    _refused(_swap(outer, f, _edit(f, change)), "FOR_ITER over something that is not an iterator")


def test_copy_zero_is_refused() -> None:
    outer, f = _function("def f(a):\n    return a\n")
    at = _at(f, "LOAD_FAST")

    def change(raw: bytearray) -> None:
        raw[at], raw[at + 1] = OP["COPY"], 0

    with pytest.raises(PolicyError):
        verify_module_code(_swap(outer, f, _edit(f, change)), filename="features.py", bundle_modules=MODS)


def test_pop_except_of_a_plain_value_is_refused() -> None:
    # The handler's PUSH_EXC_INFO turned into a NOP: POP_EXCEPT would restore a non-exception.
    outer, f = _function("def f(a):\n    try:\n        return 1 / a\n    except Exception:\n        return 0\n")
    at = _at(f, "PUSH_EXC_INFO")

    def change(raw: bytearray) -> None:
        raw[at] = OP["NOP"]

    with pytest.raises(PolicyError):
        verify_module_code(_swap(outer, f, _edit(f, change)), filename="features.py", bundle_modules=MODS)


def test_exception_table_with_a_stray_start_mark_is_refused() -> None:
    outer, f = _function("def f(a):\n    try:\n        return 1 / a\n    except Exception:\n        return 0\n")
    table = bytearray(f.co_exceptiontable)
    if len(table) < 2:
        pytest.skip("no exception table entry to mutate")
    table[1] |= 0x80  # bit 7 marks the start of an entry: only the first byte of each may carry it
    _refused(_swap(outer, f, f.replace(co_exceptiontable=bytes(table))), "exception table")


def test_jump_onto_an_inline_cache_entry_is_refused() -> None:
    # The loop's backward jump retargeted onto BINARY_OP's inline cache: the cache bytes would run
    # as an instruction.
    outer, f = _function("def f(xs):\n    for x in xs:\n        x + 1\n")
    jump = _at(f, "JUMP_BACKWARD")
    cache = _at(f, "BINARY_OP") + 2

    def change(raw: bytearray) -> None:
        raw[jump + 1] = (jump + 2 - cache) // 2

    _refused(_swap(outer, f, _edit(f, change)), "jump into the middle of an instruction")


def test_a_signed_bundle_with_a_cell_read_of_a_local_is_refused_at_load(keys_dir: Path, make_bundle) -> None:
    """The device's load path: the same mutation inside a validly signed bundle."""
    from conftest import resign

    from vm import Runtime

    source = CLOSURE + "\n\ndef entry(inputs):\n    return f(1)\n"
    data = make_bundle({"features.py": source}).read_bytes()

    def edit(_header: dict, payload: dict) -> None:
        blobs = payload["code"][MAGIC_HEX]
        module = marshal.loads(blobs["features"])
        f = next(c for c in module.co_consts if isinstance(c, types.CodeType) and c.co_name == "f")
        at, local = _at(f, "LOAD_DEREF"), f.co_varnames.index("a")
        blobs["features"] = marshal.dumps(_swap(module, f, _edit(f, lambda raw: raw.__setitem__(at + 1, local))))

    bad = resign(data, keys_dir, edit)
    with Runtime({"keys": keys_dir, "isolation": "thread"}) as rt, pytest.raises(PolicyError) as info:
        rt.load(bad)
    assert "cell" in str(info.value)
