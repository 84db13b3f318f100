"""Load-time check of unmarshalled code objects against the sandbox policy.

Defense in depth: the Ed25519 signature is the trust root; this check must hold even for a bundle
whose source was never checked (``edgevm pack --unsafe-skip-source-policy``). The C pass
(``vm.policy._verify.verify_tree``, native/verify/) walks every code object: constants are plain data or code, opcodes are
on this interpreter's allowlist, operand indices, jump targets, inline caches and the exception
table are in range, and every name an instruction uses is either plainly acceptable (the common
case, decided in C) or reported here, where the rules of ``vm.policy.rules`` judge it.
"""
from __future__ import annotations

import dis
import re
import types

from vm.errors import PolicyError
from vm.policy import _verify, opcodes, rules

MAX_PROBLEMS = 50
# Attribute names the C pass never accepts on its own (besides every name starting with "_").
_ATTR_SPECIAL = frozenset(rules.INTROSPECTION_ATTRS | rules.FORMAT_METHODS)


def _line_of(code: types.CodeType, offset: int) -> int:
    line = code.co_firstlineno
    for start, _end, lineno in code.co_lines():
        if start <= offset and lineno is not None:
            line = lineno
        if start > offset:
            break
    return line


def _next_instruction(code: bytes, offset: int) -> tuple[int, int, int]:
    """(opcode, arg, offset) of the instruction after the one at ``offset``."""
    op = code[offset]
    pos = offset + 2 + 2 * opcodes.TABLE[op * opcodes.ROW_SIZE + 1]
    arg = 0
    while pos + 1 < len(code) and code[pos] == opcodes.EXTENDED_ARG:
        arg = (arg | code[pos + 1]) << 8
        pos += 2
    if pos + 1 >= len(code):
        return -1, 0, pos
    return code[pos], arg | code[pos + 1], pos


def _landing_offsets(code: types.CodeType) -> set[int]:
    """Offsets that a jump or an exception handler entry can reach."""
    landing = set(dis.findlabels(code.co_code))
    landing.update(entry.target for entry in dis.Bytecode(code).exception_entries)
    return landing


def _import_level(code: types.CodeType, offset: int) -> int:
    """The level of the IMPORT_NAME at ``offset`` (0, absolute, unless it is plainly relative)."""
    instructions = [i for i in dis.get_instructions(code) if i.opname != "CACHE"]
    at = next(k for k, i in enumerate(instructions) if i.offset == offset)
    if at < 2:
        return 0
    level, fromlist = instructions[at - 2], instructions[at - 1]
    if level.opname != "LOAD_CONST" or fromlist.opname != "LOAD_CONST" or \
            {fromlist.offset, offset} & _landing_offsets(code):
        return 0
    return level.argval if type(level.argval) is int else 0


class _Checker:
    def __init__(self, filename: str, bundle_modules: frozenset[str]) -> None:
        self.filename = filename
        self.bundle_modules = bundle_modules
        self.problems: list[str] = []

    def fail(self, code: types.CodeType, offset: int, reason: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{self.filename}:{_line_of(code, offset)}: {reason}")

    def judge(self, code: types.CodeType, offset: int, nclass: int, name: str | None, prev_op: int,
              prev_arg: int, joined: bool) -> None:
        if joined:
            # Another path reaches this instruction, so the previous instruction does not tell what
            # is on the stack: the checks below that rely on it cannot hold.
            prev_op = -1
        if nclass == opcodes.NC_MATCH_CLASS:
            problem = self._attribute_tuple(code, prev_op, prev_arg, "class pattern")
            if problem:
                self.fail(code, offset, problem)
            return
        assert name is not None
        self._check_name(code, nclass, name, prev_op, prev_arg, offset)

    def _check_name(self, code: types.CodeType, nclass: int, name: str, prev_op: int, prev_arg: int,
                    offset: int) -> None:
        problem: str | None
        if nclass == opcodes.NC_GLOBAL_LOAD:
            problem = rules.global_read_problem(name)
            if problem is None and name == "__annotations__":
                problem = self._annotation_pattern(code, code.co_code, offset)
        elif nclass == opcodes.NC_GLOBAL_STORE:
            problem = rules.global_store_problem(name)
            if problem is None and name in rules.COMPILER_WRITTEN:
                problem = self._compiler_pattern(code, name, prev_op, prev_arg)
        elif nclass == opcodes.NC_ATTR_LOAD:
            problem = rules.attribute_problem(name)
            if problem is None and name in rules.FORMAT_METHODS:
                literal = code.co_consts[prev_arg] if prev_op == opcodes.LOAD_CONST else None
                problem = rules.format_string_problem(literal)
        elif nclass == opcodes.NC_ATTR_STORE:
            problem = rules.attribute_problem(name, store=True)
        elif nclass == opcodes.NC_IMPORT:
            problem = self._import_problem(name, _import_level(code, offset))
        elif nclass == opcodes.NC_IMPORT_FROM:
            problem = rules.import_from_problem(name)
        else:
            problem = f"unknown name use class {nclass}"
        if problem:
            self.fail(code, offset, problem)

    def _import_problem(self, name: str, level: int) -> str | None:
        if level > 0 and (name == "" or any(m == name or m.endswith("." + name) for m in self.bundle_modules)):
            return None  # relative, within the bundle; resolved by the runtime's import
        return rules.import_problem(name, self.bundle_modules)

    @staticmethod
    def _attribute_tuple(code: types.CodeType, prev_op: int, prev_arg: int, what: str) -> str | None:
        """Attribute names given as a constant tuple (class patterns, ``__match_args__``)."""
        names = code.co_consts[prev_arg] if prev_op == opcodes.LOAD_CONST else None
        if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
            return f"{what} attribute names must be a literal tuple of strings"
        for n in names:
            problem = rules.named_attribute_problem(n)
            if problem:
                return f"{what}: {problem}"
        return None

    @classmethod
    def _compiler_pattern(cls, code: types.CodeType, name: str, prev_op: int, prev_arg: int) -> str | None:
        if name == "__match_args__":
            return cls._attribute_tuple(code, prev_op, prev_arg, "__match_args__")
        previous = dis.opname[prev_op] if prev_op >= 0 else ""
        if name == "__module__":
            ok = prev_op == opcodes.LOAD_NAME and code.co_names[prev_arg] == "__name__"
        elif name == "__qualname__":
            ok = prev_op == opcodes.LOAD_CONST and isinstance(code.co_consts[prev_arg], str)
        elif name in ("__annotate__", "__annotate_func__"):  # 3.14: a function just made from this file's code
            ok = previous in ("MAKE_FUNCTION", "SET_FUNCTION_ATTRIBUTE")
        elif name == "__conditional_annotations__":  # 3.14: a new, empty set
            ok = previous == "BUILD_SET" and prev_arg == 0
        elif name == "__classdictcell__":  # 3.14: the class body's own __classdict__ cell
            ok = previous in ("LOAD_FAST", "LOAD_FAST_BORROW", "LOAD_CLOSURE") and \
                code._varname_from_oparg(prev_arg) == "__classdict__"  # type: ignore[attr-defined]
        else:
            return None
        return None if ok else f"'{name}' may only be set by the compiler"

    @staticmethod
    def _annotation_pattern(code: types.CodeType, raw: bytes, offset: int) -> str | None:
        # The compiler reads __annotations__ only to store one annotation under an identifier key,
        # in three instructions that no jump enters.
        op, arg, pos = _next_instruction(raw, offset)
        if op == opcodes.LOAD_CONST:
            key = code.co_consts[arg]
            if isinstance(key, str) and key.isidentifier():
                op2, _, pos2 = _next_instruction(raw, pos)
                if op2 == opcodes.STORE_SUBSCR and not {pos, pos2} & _landing_offsets(code):
                    return None
        return "'__annotations__' may only be used by annotated assignments"


def verify_module_code(code: object, *, filename: str, bundle_modules: frozenset[str]) -> None:
    """Raise ``PolicyError`` listing every violation in ``code`` and its nested code objects."""
    if not isinstance(code, types.CodeType):
        raise PolicyError(f"{filename}: the code blob is a {type(code).__name__}, not a code object")
    checker = _Checker(filename, bundle_modules)
    try:
        reports = _verify.verify_tree(code, filename, opcodes.TABLE, opcodes.EXTENDED_ARG, opcodes.FOR_ITER_CHECK,
                                     _ATTR_SPECIAL, rules.PROTECTED_NAMES)
    except ValueError as exc:
        text = re.sub(r"\(opcode (\d+)\)", lambda m: f"({dis.opname[int(m.group(1))]})", str(exc))
        raise PolicyError(f"{filename}: malformed bytecode {text}", detail={"problems": [text]}) from None
    for report in reports:
        checker.judge(*report)
    if checker.problems:
        raise PolicyError("bytecode policy violation:\n" + "\n".join(checker.problems),
                          detail={"problems": checker.problems})
