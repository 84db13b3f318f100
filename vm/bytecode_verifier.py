"""Load-time check of unmarshalled code objects against the sandbox policy.

Defense in depth: the Ed25519 signature is the trust root; this check must hold even for a bundle
whose source was never checked (``edgevm pack --unsafe-skip-source-policy``). For every code
object, recursively: constants are plain data or code; the C scanner (``vm._guard.scan_code``)
checks opcodes against the allowlist for this interpreter, operand indices, jump targets, inline
caches and the exception table, and reports every name an instruction uses; this module applies
the name rules of ``vm.policy`` to those names.
"""
from __future__ import annotations

import types

from vm import _guard, opcodes, policy
from vm.errors import PolicyError

_PLAIN_CONSTS = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))
MAX_PROBLEMS = 50


def _line_of(code: types.CodeType, offset: int) -> int:
    line = code.co_firstlineno
    for start, _end, lineno in code.co_lines():
        if start <= offset and lineno is not None:
            line = lineno
        if start > offset:
            break
    return line


def _check_const(value: object, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN_CONSTS):
        return True
    if isinstance(value, (tuple, frozenset)) and depth < 20:
        return all(_check_const(v, depth + 1) or isinstance(v, types.CodeType) for v in value)
    return False


def _nlocalsplus(code: types.CodeType) -> int:
    varnames = set(code.co_varnames)
    return len(code.co_varnames) + sum(1 for c in code.co_cellvars if c not in varnames) + len(code.co_freevars)


def _next_instruction(code: bytes, offset: int) -> tuple[int, int, int]:
    """(opcode, arg, offset) of the instruction after the one at ``offset``."""
    op = code[offset]
    pos = offset + 2 + 2 * opcodes.TABLE[op * 8 + 1]
    arg = 0
    while pos + 1 < len(code) and code[pos] == opcodes.EXTENDED_ARG:
        arg = (arg | code[pos + 1]) << 8
        pos += 2
    if pos + 1 >= len(code):
        return -1, 0, pos
    return code[pos], arg | code[pos + 1], pos


class _Checker:
    def __init__(self, filename: str, bundle_modules: frozenset[str]) -> None:
        self.filename = filename
        self.bundle_modules = bundle_modules
        self.problems: list[str] = []

    def fail(self, code: types.CodeType, offset: int, reason: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{self.filename}:{_line_of(code, offset)}: {reason}")

    def check(self, code: types.CodeType, depth: int = 0) -> None:
        if depth > 100:
            self.fail(code, 0, "code objects nested too deeply")
            return
        if code.co_filename != self.filename:
            self.fail(code, 0, f"code object claims another file name {code.co_filename!r}")
        nested = []
        for value in code.co_consts:
            if isinstance(value, types.CodeType):
                nested.append(value)
            elif not _check_const(value):
                self.fail(code, 0, f"constant of type {type(value).__name__} is not allowed")
            elif isinstance(value, (tuple, frozenset)):
                nested.extend(v for v in value if isinstance(v, types.CodeType))
        raw = code.co_code
        try:
            uses = _guard.scan_code(raw, code.co_exceptiontable, opcodes.TABLE, len(code.co_consts),
                                    len(code.co_names), _nlocalsplus(code), len(code.co_freevars),
                                    opcodes.EXTENDED_ARG, opcodes.FOR_ITER_CHECK)
        except ValueError as exc:
            self.fail(code, 0, f"malformed bytecode in {code.co_qualname}: {exc}")
            return
        for nclass, index, prev_op, prev_arg, offset in set(uses):
            if nclass == opcodes.NC_MATCH_CLASS:
                problem = self._attribute_tuple(code, prev_op, prev_arg, "class pattern")
                if problem:
                    self.fail(code, offset, problem)
                continue
            self._check_name(code, raw, nclass, code.co_names[index], prev_op, prev_arg, offset)
        for sub in nested:
            self.check(sub, depth + 1)

    def _check_name(self, code: types.CodeType, raw: bytes, nclass: int, name: str, prev_op: int,
                    prev_arg: int, offset: int) -> None:
        problem: str | None
        if nclass == opcodes.NC_GLOBAL_LOAD:
            problem = policy.global_read_problem(name)
            if problem is None and name == "__annotations__":
                problem = self._annotation_pattern(code, raw, offset)
        elif nclass == opcodes.NC_GLOBAL_STORE:
            problem = policy.global_store_problem(name)
            if problem is None and name in policy.COMPILER_WRITTEN:
                problem = self._compiler_pattern(code, name, prev_op, prev_arg)
        elif nclass == opcodes.NC_ATTR_LOAD:
            problem = policy.attribute_problem(name)
            if problem is None and name in policy.FORMAT_METHODS:
                literal = code.co_consts[prev_arg] if prev_op == opcodes.LOAD_CONST else None
                problem = policy.format_string_problem(literal)
        elif nclass == opcodes.NC_ATTR_STORE:
            problem = policy.attribute_problem(name, store=True)
        elif nclass == opcodes.NC_IMPORT:
            problem = self._import_problem(name)
        elif nclass == opcodes.NC_IMPORT_FROM:
            problem = policy.import_from_problem(name)
        else:
            problem = f"unknown name use class {nclass}"
        if problem:
            self.fail(code, offset, problem)

    def _import_problem(self, name: str) -> str | None:
        if name == "" or any(m == name or m.endswith("." + name) for m in self.bundle_modules):
            return None  # a module of the bundle, possibly relative; resolved by the runtime's import
        return policy.import_problem(name, self.bundle_modules)

    @staticmethod
    def _attribute_tuple(code: types.CodeType, prev_op: int, prev_arg: int, what: str) -> str | None:
        """Attribute names given as a constant tuple (class patterns, ``__match_args__``)."""
        names = code.co_consts[prev_arg] if prev_op == opcodes.LOAD_CONST else None
        if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
            return f"{what} attribute names must be a literal tuple of strings"
        for n in names:
            problem = policy.attribute_problem(n)
            if problem:
                return f"{what}: {problem}"
        return None

    @classmethod
    def _compiler_pattern(cls, code: types.CodeType, name: str, prev_op: int, prev_arg: int) -> str | None:
        if name == "__match_args__":
            return cls._attribute_tuple(code, prev_op, prev_arg, "__match_args__")
        if name == "__module__":
            ok = prev_op == opcodes.LOAD_NAME and code.co_names[prev_arg] == "__name__"
        elif name == "__qualname__":
            ok = prev_op == opcodes.LOAD_CONST and isinstance(code.co_consts[prev_arg], str)
        else:
            return None
        return None if ok else f"'{name}' may only be set by the compiler"

    @staticmethod
    def _annotation_pattern(code: types.CodeType, raw: bytes, offset: int) -> str | None:
        # The compiler reads __annotations__ only to store one annotation under an identifier key.
        op, arg, pos = _next_instruction(raw, offset)
        if op == opcodes.LOAD_CONST:
            key = code.co_consts[arg]
            if isinstance(key, str) and key.isidentifier():
                op2, _, _ = _next_instruction(raw, pos)
                if op2 == opcodes.STORE_SUBSCR:
                    return None
        return "'__annotations__' may only be used by annotated assignments"


def verify_module_code(code: object, *, filename: str, bundle_modules: frozenset[str]) -> None:
    """Raise ``PolicyError`` listing every violation in ``code`` and its nested code objects."""
    if not isinstance(code, types.CodeType):
        raise PolicyError(f"{filename}: the code blob is a {type(code).__name__}, not a code object")
    checker = _Checker(filename, bundle_modules)
    checker.check(code)
    if checker.problems:
        raise PolicyError("bytecode policy violation:\n" + "\n".join(checker.problems),
                          detail={"problems": checker.problems})
