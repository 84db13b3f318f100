"""The policy tables, the pack-time source check and the load-time bytecode check agree, and
the bytecode check refuses malformed code objects that no compiler would produce."""
from __future__ import annotations

import dis
import types

import pytest

import stdlib_slim
from vm.errors import PolicyError
from vm.policy import opcodes, rules
from vm.policy.verifier import verify_module_code
from vm.tools.source_policy import check_source

MODS = frozenset({"features", "pkg", "pkg.util"})


def src_problems(text: str, module: str = "features") -> list[str]:
    return [str(v) for v in check_source(text, file="features.py", module=module, is_package=False,
                                         bundle_modules=MODS)]


def code_problems(text: str) -> list[str]:
    code = compile(text, "features.py", "exec", dont_inherit=True)
    try:
        verify_module_code(code, filename="features.py", bundle_modules=MODS)
    except PolicyError as exc:
        return exc.detail["problems"]
    return []


def test_slim_module_list_matches_the_library() -> None:
    assert rules.SLIM_MODULES == stdlib_slim.MODULES


ACCEPTED = [
    "import math\nx = math.sqrt(2)\n",
    "from collections import Counter, abc\nfrom collections.abc import Mapping\n",
    "import collections.abc\n",
    "from pkg import util\nfrom pkg.util import f\n",
    "class A:\n    __slots__ = ('x',)\n    def __init__(self):\n        super().__init__()\n        self.x = 1\n"
    "    def __repr__(self):\n        return f'A({self.x!r})'\n    def __eq__(self, o):\n        return self.x == o.x\n",
    "x: int = 5\nclass P:\n    y: float = 1.0\n",
    "s = '{} and {name}'.format(1, name=2)\nt = '{0:{1}}'.format(3.14159, '.2f')\n",
    "def f(*a, **k):\n    return type(a).__name__\n",
    "for _ in range(3):\n    pass\n_private = 1\nprint(_private)\n",
    "__all__ = ['f']\n__version__ = '1.0'\n",
    "try:\n    pass\nexcept (ValueError, KeyError) as e:\n    msg = e.args\n",
    "match {'a': 1}:\n    case {'a': x}:\n        pass\n",
    "class P:\n    __match_args__ = ('x', 'y')\n",
    "async def g():\n    return 1\n",
    "def gen():\n    yield from range(3)\n",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_ordinary_code_passes_both_checks(text: str) -> None:
    assert src_problems(text) == []
    assert code_problems(text) == []


REFUSED = [
    ("import os\n", "import of 'os'"),
    ("from sys import modules\n", "import of 'sys'"),
    ("x = [].__class__.__mro__\n", "'__mro__'"),
    ("class A:\n    def f(self):\n        self.__class__ = int\n", "'__class__'"),
    ("def f():\n    yield 1\ng = f().gi_frame\n", "gi_frame"),
    ("x = (lambda: 0).__code__\n", "'__code__'"),
    ("x = '{0.__class__}'.format(1)\n", "format field"),
    ("x = '{a[0]}'.format_map({'a': [1]})\n", "format field"),
    ("x = __builtins__\n", "'__builtins__'"),
    ("x = __import__('os')\n", "'__import__'"),
    ("class A:\n    def __del__(self):\n        pass\n", "'__del__'"),
    ("class A:\n    def __getattribute__(self, n):\n        pass\n", "'__getattribute__'"),
    ("class A:\n    def __init_subclass__(cls):\n        pass\n", "'__init_subclass__'"),
    ("super = 1\n", "'super' cannot be rebound"),
    ("x = 1\nx.mro\n", "mro"),
    ("from math import *\n", "import"),
    ("from collections import _sys\n", "'_sys'"),
    ("class P:\n    __match_args__ = ('__class__',)\n", "__class__"),
    ("match 1:\n    case object(__class__=c):\n        pass\n", "__class__"),
    ("import math\nmath.__dict__['x'] = 1\n", "'__dict__'"),
]


@pytest.mark.parametrize("text, needle", REFUSED)
def test_escapes_fail_both_checks(text: str, needle: str) -> None:
    src = src_problems(text)
    assert src and any(needle.lower() in p.lower() for p in src), src
    assert all(p.startswith("features.py:") for p in src)
    code = code_problems(text)
    assert code and any(needle.lower() in p.lower() for p in code), code


@pytest.mark.parametrize("text", ["eval('1')\n", "open('x')\n", "x = globals()\n", "try:\n    pass\nexcept:\n    pass\n",
                                  "class A(metaclass=type):\n    pass\n", "__annotations__['x'] = int\n",
                                  "from ..up import x\n"])
def test_source_only_rules(text: str) -> None:
    assert src_problems(text)


# The source check leaves these to the sandbox's run-time guards (the compiler turns them into guard
# calls, tests/policy/test_guarded_attributes.py); the same names in raw bytecode stay refused.
RUNTIME_CHECKED = [
    ("x = ().__class__\n", "'__class__'"),
    ("import math\nmath._x = 1\n", "'_x'"),
    ("class A:\n    def f(self):\n        return self._cache\n", "'_cache'"),
    ("class A:\n    def f(self):\n        del self.__x\n", "'_A__x'"),
    ("fmt = '{}'\nx = fmt.format(1)\n", "literal format string"),
    ("x = str.format('{}', 1)\n", "literal format string"),
    ("class R:\n    def format(self):\n        return 1\nx = R().format()\n", "literal format string"),
]


@pytest.mark.parametrize("text, needle", RUNTIME_CHECKED)
def test_guarded_attributes_are_left_to_run_time(text: str, needle: str) -> None:
    assert src_problems(text) == []
    code = code_problems(text)
    assert code and any(needle.lower() in p.lower() for p in code), code


def test_source_positions_are_line_and_column() -> None:
    (problem,) = src_problems("import math\n\ny = 1 + math.__dict__\n")
    assert problem.startswith("features.py:3:9: ")


def test_annotations_store_with_a_crafted_key_is_refused() -> None:
    # A crafted key would become code inside dataclasses' generated __init__.
    assert code_problems("__annotations__['x=__import__(\"os\")'] = int\n")


def test_format_receiver_reached_by_a_jump_is_refused() -> None:
    # The instruction before `.format` is the literal, but the other branch arrives with `a`.
    problems = code_problems("def f(a, c, x):\n    return (a if c else '{}').format(x)\n")
    assert any("literal format string" in p for p in problems), problems


def test_module_name_may_only_be_set_by_the_compiler() -> None:
    assert code_problems("class A:\n    __module__ = 'os'\n")
    assert code_problems("class A:\n    pass\n") == []


@pytest.mark.parametrize("name", ["_x", "__class__", "__init__", "__name__", "gi_frame", "format", "mro",
                                  "tofile", "plain", "__eq__", "__globals__"])
def test_attribute_rules(name: str) -> None:
    read, store = rules.attribute_problem(name), rules.attribute_problem(name, store=True)
    if name in ("plain", "format"):
        assert read is None and store is None
    elif name in ("__init__", "__name__", "__eq__"):
        assert read is None and store is not None
    else:
        assert read is not None and store is not None


def _module_code(text: str) -> types.CodeType:
    return compile(text, "features.py", "exec", dont_inherit=True)


def _refuses(code: types.CodeType, needle: str = "") -> str:
    with pytest.raises(PolicyError) as info:
        verify_module_code(code, filename="features.py", bundle_modules=MODS)
    assert needle in str(info.value)
    return str(info.value)


def _inner(text: str) -> tuple[types.CodeType, types.CodeType]:
    outer = _module_code(text)
    inner = next(c for c in outer.co_consts if isinstance(c, types.CodeType))
    return outer, inner


def _replace_inner(outer: types.CodeType, inner: types.CodeType, new: types.CodeType) -> types.CodeType:
    consts = tuple(new if c is inner else c for c in outer.co_consts)
    return outer.replace(co_consts=consts)


def test_crafted_opcode_is_refused() -> None:
    code = _module_code("x = 1\n")
    raw = bytearray(code.co_code)
    bad = next(op for op in range(256) if opcodes.TABLE[op * opcodes.ROW_SIZE] == 0 and op not in (0,))
    raw[2] = bad
    _refuses(code.replace(co_code=bytes(raw)), "opcode not allowed")


def test_crafted_constant_index_is_refused() -> None:
    code = _module_code("x = 1\n")
    raw = bytearray(code.co_code)
    idx = next(i for i in range(0, len(raw), 2) if raw[i] == opcodes.LOAD_CONST)
    raw[idx + 1] = 200
    _refuses(code.replace(co_code=bytes(raw)), "constant index out of range")


def test_crafted_name_index_is_refused() -> None:
    code = _module_code("import math\nx = math.pi\n")
    raw = bytearray(code.co_code)
    idx = next(i for i in range(0, len(raw), 2) if raw[i] in (opcodes.LOAD_NAME,))
    raw[idx + 1] = 250
    _refuses(code.replace(co_code=bytes(raw)), "name index out of range")


def test_crafted_jump_is_refused() -> None:
    outer, inner = _inner("def f(xs):\n    for x in xs:\n        pass\n")
    raw = bytearray(inner.co_code)
    jump = next(i for i in range(0, len(raw), 2) if opcodes.TABLE[raw[i] * opcodes.ROW_SIZE + 2] == opcodes.ARG_JUMP_BWD)
    raw[jump + 1] = 255
    _refuses(_replace_inner(outer, inner, inner.replace(co_code=bytes(raw))), "jump")


def test_crafted_constant_type_is_refused() -> None:
    outer, inner = _inner("def f():\n    return 1\n")
    _refuses(_replace_inner(outer, inner, inner.replace(co_consts=(None, [1, 2]))), "constant of type list")


def test_foreign_file_name_is_refused() -> None:
    outer, inner = _inner("def f():\n    return 1\n")
    _refuses(_replace_inner(outer, inner, inner.replace(co_filename="/etc/passwd")), "another file name")


def test_renamed_attribute_is_refused() -> None:
    # The source said `x.plain`, the bytecode says `x.__globals__`: only the load-time check can see it.
    outer, inner = _inner("def f(x):\n    return x.plain\n")
    renamed = inner.replace(co_names=tuple("__globals__" if n == "plain" else n for n in inner.co_names))
    _refuses(_replace_inner(outer, inner, renamed), "__globals__")


def test_stack_underflow_is_refused() -> None:
    # `return a + b` with the load of `b` replaced by a NOP: BINARY_OP would read below the stack.
    outer, inner = _inner("def f(a, b):\n    return a + b\n")
    raw = bytearray(inner.co_code)
    loads = [i for i in range(0, len(raw), 2) if dis.opname[raw[i]].startswith("LOAD_FAST")]  # 3.14: _BORROW
    raw[loads[-1]], raw[loads[-1] + 1] = dis.opmap["NOP"], 0
    _refuses(_replace_inner(outer, inner, inner.replace(co_code=bytes(raw))), "below the bottom of the stack")


def test_stack_overflow_is_refused() -> None:
    outer, inner = _inner("def f(a, b, c):\n    return [a, b, c]\n")
    _refuses(_replace_inner(outer, inner, inner.replace(co_stacksize=1)), "stack depth out of bounds")


def test_exception_handler_deeper_than_the_stack_is_refused() -> None:
    outer, inner = _inner("def f(a):\n    try:\n        return 1 / a\n    except ZeroDivisionError:\n        return 0\n")
    _refuses(_replace_inner(outer, inner, inner.replace(co_stacksize=0)), "")


def test_non_code_blob_is_refused() -> None:
    with pytest.raises(PolicyError):
        verify_module_code([1, 2], filename="features.py", bundle_modules=MODS)


def test_stdlib_sized_code_verifies() -> None:
    # The verifier accepts everything the compiler emits for ordinary modules: compile a few large
    # stdlib modules and check that only name-rule problems (never structural ones) come back.
    import dataclasses
    import inspect
    import statistics

    for module in (statistics, dataclasses):
        code = compile(inspect.getsource(module), "features.py", "exec", dont_inherit=True)
        try:
            verify_module_code(code, filename="features.py", bundle_modules=MODS)
        except PolicyError as exc:
            assert not any("malformed" in p for p in exc.detail["problems"]), exc.detail["problems"][:3]
