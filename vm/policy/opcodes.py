"""Opcode allowlists per CPython version, and the table the C scanner reads.

Every opcode the compiler emits for ordinary code is allowed, except the few that serve the
interactive prompt or ``import *`` (``PRINT_EXPR``, ``IMPORT_STAR`` and their 3.12+ intrinsic
forms). Specialised, instrumented and internal opcodes never appear in freshly compiled code, so
they are refused: a code object that contains one was built by hand.
"""
from __future__ import annotations

import opcode
import struct
import sys

# Opcodes CPython 3.11-3.14 emit for ordinary code (the union; each version uses its subset).
_COMMON = {
    "NOP", "POP_TOP", "PUSH_NULL", "COPY", "SWAP", "RESUME", "EXTENDED_ARG", "CACHE",
    "UNARY_NEGATIVE", "UNARY_NOT", "UNARY_INVERT", "UNARY_POSITIVE", "TO_BOOL",
    "BINARY_OP", "BINARY_SUBSCR", "BINARY_SLICE", "STORE_SUBSCR", "STORE_SLICE", "DELETE_SUBSCR",
    "COMPARE_OP", "IS_OP", "CONTAINS_OP",
    "BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_MAP", "BUILD_CONST_KEY_MAP", "BUILD_STRING",
    "BUILD_SLICE", "LIST_APPEND", "SET_ADD", "MAP_ADD", "LIST_EXTEND", "SET_UPDATE", "DICT_UPDATE",
    "DICT_MERGE", "LIST_TO_TUPLE", "UNPACK_SEQUENCE", "UNPACK_EX",
    "LOAD_CONST", "RETURN_CONST", "KW_NAMES",
    "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR", "LOAD_FAST_LOAD_FAST", "STORE_FAST",
    "STORE_FAST_LOAD_FAST", "STORE_FAST_STORE_FAST", "DELETE_FAST",
    "MAKE_CELL", "LOAD_CLOSURE", "LOAD_DEREF", "STORE_DEREF", "DELETE_DEREF", "LOAD_CLASSDEREF",
    "COPY_FREE_VARS", "LOAD_FROM_DICT_OR_DEREF", "LOAD_FROM_DICT_OR_GLOBALS", "LOAD_LOCALS",
    "LOAD_NAME", "STORE_NAME", "DELETE_NAME", "LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL",
    "LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR", "LOAD_SUPER_ATTR",
    "IMPORT_NAME", "IMPORT_FROM",
    "PRECALL", "CALL", "CALL_KW", "CALL_FUNCTION_EX", "CALL_INTRINSIC_1", "CALL_INTRINSIC_2",
    "MAKE_FUNCTION", "SET_FUNCTION_ATTRIBUTE", "LOAD_BUILD_CLASS", "SETUP_ANNOTATIONS",
    "RETURN_VALUE", "RETURN_GENERATOR", "YIELD_VALUE", "SEND", "END_SEND", "GET_YIELD_FROM_ITER",
    "ASYNC_GEN_WRAP", "GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "END_ASYNC_FOR", "CLEANUP_THROW",
    "BEFORE_WITH", "BEFORE_ASYNC_WITH", "WITH_EXCEPT_START",
    "GET_ITER", "FOR_ITER", "END_FOR", "GET_LEN",
    "JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "JUMP_IF_FALSE_OR_POP",
    "JUMP_IF_TRUE_OR_POP", "POP_JUMP_IF_FALSE", "POP_JUMP_IF_TRUE", "POP_JUMP_IF_NONE",
    "POP_JUMP_IF_NOT_NONE", "POP_JUMP_FORWARD_IF_FALSE", "POP_JUMP_FORWARD_IF_TRUE",
    "POP_JUMP_FORWARD_IF_NONE", "POP_JUMP_FORWARD_IF_NOT_NONE", "POP_JUMP_BACKWARD_IF_FALSE",
    "POP_JUMP_BACKWARD_IF_TRUE", "POP_JUMP_BACKWARD_IF_NONE", "POP_JUMP_BACKWARD_IF_NOT_NONE",
    "RAISE_VARARGS", "RERAISE", "PUSH_EXC_INFO", "POP_EXCEPT", "CHECK_EXC_MATCH", "CHECK_EG_MATCH",
    "PREP_RERAISE_STAR", "LOAD_ASSERTION_ERROR",
    "FORMAT_VALUE", "CONVERT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC",
    "MATCH_CLASS", "MATCH_MAPPING", "MATCH_SEQUENCE", "MATCH_KEYS",
    "EXIT_INIT_CHECK",
    # 3.14: borrowed loads, small ints and common constants as operands, `with` through LOAD_SPECIAL,
    # a branch's NOT_TAKEN (a NOP) and the loop's POP_ITER
    "LOAD_FAST_BORROW", "LOAD_FAST_BORROW_LOAD_FAST_BORROW", "LOAD_SMALL_INT", "LOAD_COMMON_CONSTANT",
    "LOAD_SPECIAL", "NOT_TAKEN", "POP_ITER",
}
# Refused: the interactive prompt's printer and star imports. (3.14's template strings, BUILD_TEMPLATE
# and BUILD_INTERPOLATION, are not on the list either: a bundle using them fails this check at pack.)
REFUSED = {"PRINT_EXPR", "IMPORT_STAR"}
ALLOWED: frozenset[str] = frozenset(_COMMON - REFUSED)

# Name classes reported by the scanner (matched in vm/bytecode_verifier.py).
NC_GLOBAL_LOAD, NC_GLOBAL_STORE, NC_ATTR_LOAD, NC_ATTR_STORE, NC_IMPORT, NC_IMPORT_FROM, NC_MATCH_CLASS = range(1, 8)
_NAME_CLASS = {
    "LOAD_NAME": NC_GLOBAL_LOAD, "LOAD_GLOBAL": NC_GLOBAL_LOAD, "LOAD_FROM_DICT_OR_GLOBALS": NC_GLOBAL_LOAD,
    "STORE_NAME": NC_GLOBAL_STORE, "STORE_GLOBAL": NC_GLOBAL_STORE,
    "DELETE_NAME": NC_GLOBAL_STORE, "DELETE_GLOBAL": NC_GLOBAL_STORE,
    "LOAD_ATTR": NC_ATTR_LOAD, "LOAD_METHOD": NC_ATTR_LOAD, "LOAD_SUPER_ATTR": NC_ATTR_LOAD,
    "STORE_ATTR": NC_ATTR_STORE, "DELETE_ATTR": NC_ATTR_STORE,
    "IMPORT_NAME": NC_IMPORT, "IMPORT_FROM": NC_IMPORT_FROM,
}

(ARG_NONE, ARG_CONST, ARG_NAME, ARG_LOCAL, ARG_LOCAL_PAIR, ARG_FREE_COUNT, ARG_JUMP_FWD, ARG_JUMP_BWD, ARG_ENUM,
 ARG_REPORT) = range(10)

# allowed, caches, argkind, shift, name_class, deny_mask, max, expect_next (+1), base_op (+1),
# inputs kind, inputs constant, flow, resumes, typed (OP_*), code_req (REQ_*)
_ROW = struct.Struct("<BBBBBBHBBBBBBBB")

# What the verifier's type pass does with an instruction (native/verify/verify.c reads the same
# numbers): how it moves cells, containers, iterators and exceptions on the stack and in the slots.
(OP_NONE, OP_LOAD_FAST, OP_LOAD_FAST_CLEAR, OP_LOAD_FAST_PAIR, OP_STORE_FAST, OP_STORE_LOAD_FAST, OP_STORE_FAST_PAIR,
 OP_DELETE_FAST, OP_DEREF, OP_LOAD_CLOSURE, OP_MAKE_CELL, OP_COPY_FREE_VARS, OP_SWAP, OP_COPY, OP_LOAD_CONST,
 OP_BUILD_TUPLE, OP_BUILD_LIST, OP_BUILD_SET, OP_BUILD_MAP, OP_LIST_TO_TUPLE, OP_LIST_ADD, OP_SET_ADD, OP_MAP_ADD,
 OP_POP_ONLY, OP_MAKE_FUNCTION, OP_SET_FUNCTION_ATTRIBUTE, OP_GET_ITER, OP_GET_AWAITABLE, OP_GET_ANEXT, OP_FOR_ITER,
 OP_SEND, OP_PUSH_EXC_INFO, OP_POP_EXCEPT, OP_RERAISE, OP_NEEDS_EXC, OP_WITH_EXCEPT_START, OP_CHECK_EXC_MATCH,
 OP_CHECK_EG_MATCH, OP_PREP_RERAISE_STAR, OP_INTRINSIC_1, OP_INTRINSIC_2, OP_MATCH_KEYS, OP_JUMP_IF_NOT_NONE,
 OP_KW_NAMES, OP_PRECALL, OP_CALL, OP_CALL_KW, OP_LIST_EXTEND, OP_LOAD_NAME) = range(49)
_TYPED: dict[str, int] = {
    "LOAD_FAST": OP_LOAD_FAST, "LOAD_FAST_CHECK": OP_LOAD_FAST, "LOAD_FAST_BORROW": OP_LOAD_FAST,
    "LOAD_FAST_AND_CLEAR": OP_LOAD_FAST_CLEAR, "LOAD_FAST_LOAD_FAST": OP_LOAD_FAST_PAIR,
    "LOAD_FAST_BORROW_LOAD_FAST_BORROW": OP_LOAD_FAST_PAIR, "STORE_FAST": OP_STORE_FAST, "STORE_FAST_LOAD_FAST": OP_STORE_LOAD_FAST,
    "STORE_FAST_STORE_FAST": OP_STORE_FAST_PAIR, "DELETE_FAST": OP_DELETE_FAST,
    **dict.fromkeys(("LOAD_DEREF", "STORE_DEREF", "DELETE_DEREF", "LOAD_CLASSDEREF", "LOAD_FROM_DICT_OR_DEREF"),
                    OP_DEREF),
    "LOAD_CLOSURE": OP_LOAD_CLOSURE, "MAKE_CELL": OP_MAKE_CELL, "COPY_FREE_VARS": OP_COPY_FREE_VARS,
    "SWAP": OP_SWAP, "COPY": OP_COPY, "LOAD_CONST": OP_LOAD_CONST, "BUILD_TUPLE": OP_BUILD_TUPLE,
    "BUILD_LIST": OP_BUILD_LIST, "BUILD_SET": OP_BUILD_SET, "BUILD_MAP": OP_BUILD_MAP,
    "BUILD_CONST_KEY_MAP": OP_BUILD_MAP, "LIST_TO_TUPLE": OP_LIST_TO_TUPLE, "LIST_APPEND": OP_LIST_ADD,
    "LIST_EXTEND": OP_LIST_EXTEND, "SET_ADD": OP_SET_ADD, "SET_UPDATE": OP_SET_ADD, "MAP_ADD": OP_MAP_ADD,
    "DICT_UPDATE": OP_POP_ONLY, "DICT_MERGE": OP_POP_ONLY, "MAKE_FUNCTION": OP_MAKE_FUNCTION,
    "SET_FUNCTION_ATTRIBUTE": OP_SET_FUNCTION_ATTRIBUTE, "GET_ITER": OP_GET_ITER,
    "GET_YIELD_FROM_ITER": OP_GET_AWAITABLE, "GET_AWAITABLE": OP_GET_AWAITABLE, "GET_ANEXT": OP_GET_ANEXT,
    "FOR_ITER": OP_FOR_ITER, "SEND": OP_SEND, "PUSH_EXC_INFO": OP_PUSH_EXC_INFO, "POP_EXCEPT": OP_POP_EXCEPT,
    "RERAISE": OP_RERAISE, "END_ASYNC_FOR": OP_NEEDS_EXC, "CLEANUP_THROW": OP_NEEDS_EXC,
    "WITH_EXCEPT_START": OP_WITH_EXCEPT_START, "CHECK_EXC_MATCH": OP_CHECK_EXC_MATCH,
    "CHECK_EG_MATCH": OP_CHECK_EG_MATCH, "PREP_RERAISE_STAR": OP_PREP_RERAISE_STAR,
    "CALL_INTRINSIC_1": OP_INTRINSIC_1, "CALL_INTRINSIC_2": OP_INTRINSIC_2, "MATCH_KEYS": OP_MATCH_KEYS,
    **dict.fromkeys(("POP_JUMP_IF_NOT_NONE", "POP_JUMP_FORWARD_IF_NOT_NONE", "POP_JUMP_BACKWARD_IF_NOT_NONE"),
                    OP_JUMP_IF_NOT_NONE),
    "KW_NAMES": OP_KW_NAMES, "PRECALL": OP_PRECALL, "CALL": OP_CALL, "CALL_KW": OP_CALL_KW,
    "LOAD_NAME": OP_LOAD_NAME,
}

# Which code objects may hold an instruction (co_flags): the compiler emits these only there.
REQ_GEN, REQ_ASYNC, REQ_ASYNC_GEN, REQ_UNOPTIMIZED = 1, 2, 4, 8
_CODE_REQ: dict[str, int] = {
    **dict.fromkeys(("YIELD_VALUE", "RETURN_GENERATOR", "SEND", "END_SEND", "CLEANUP_THROW", "GET_YIELD_FROM_ITER"),
                    REQ_GEN),
    # (GET_AITER is not here: a plain function may create an async generator expression)
    **dict.fromkeys(("GET_AWAITABLE", "GET_ANEXT", "END_ASYNC_FOR", "BEFORE_ASYNC_WITH"), REQ_ASYNC),
    # (LOAD_SPECIAL's __aenter__/__aexit__ are not here: the eval loop looks them up like any method)
    "ASYNC_GEN_WRAP": REQ_ASYNC_GEN,
    "LOAD_CLASSDEREF": REQ_UNOPTIMIZED,  # reads the frame's locals mapping, which only class bodies have
}
# CALL_INTRINSIC_1 operands: 3 INTRINSIC_STOPITERATION_ERROR (generators), 4 INTRINSIC_ASYNC_GEN_WRAP.
INTRINSIC_STOPITERATION_ERROR, INTRINSIC_ASYNC_GEN_WRAP, INTRINSIC_LIST_TO_TUPLE = 3, 4, 6

# How deep the stack must be before an instruction runs (what it pops or reads below the top),
# as (kind, constant). The verifier's stack analysis checks it on every path, so crafted code
# cannot make an instruction read below the bottom of its frame's stack.
IN_FIXED, IN_ARG, IN_ARG2, IN_MAKE_FUNCTION, IN_FORMAT_VALUE, IN_CALL_EX, IN_SLICE = range(7)
_INPUTS: dict[str, tuple[int, int]] = {
    **{n: (IN_FIXED, 1) for n in (
        "POP_TOP", "UNARY_NEGATIVE", "UNARY_NOT", "UNARY_INVERT", "UNARY_POSITIVE", "TO_BOOL", "STORE_FAST",
        "STORE_DEREF", "STORE_NAME", "STORE_GLOBAL", "LOAD_ATTR", "LOAD_METHOD", "DELETE_ATTR", "GET_ITER",
        "GET_YIELD_FROM_ITER", "GET_AITER", "GET_ANEXT", "GET_AWAITABLE", "GET_LEN", "RETURN_VALUE",
        "YIELD_VALUE", "POP_JUMP_IF_FALSE", "POP_JUMP_IF_TRUE", "POP_JUMP_IF_NONE", "POP_JUMP_IF_NOT_NONE",
        "POP_JUMP_FORWARD_IF_FALSE", "POP_JUMP_FORWARD_IF_TRUE", "POP_JUMP_FORWARD_IF_NONE",
        "POP_JUMP_FORWARD_IF_NOT_NONE", "POP_JUMP_BACKWARD_IF_FALSE", "POP_JUMP_BACKWARD_IF_TRUE",
        "POP_JUMP_BACKWARD_IF_NONE", "POP_JUMP_BACKWARD_IF_NOT_NONE", "JUMP_IF_FALSE_OR_POP",
        "JUMP_IF_TRUE_OR_POP", "FOR_ITER", "IMPORT_FROM", "PUSH_EXC_INFO", "POP_EXCEPT", "BEFORE_WITH",
        "BEFORE_ASYNC_WITH", "ASYNC_GEN_WRAP", "MATCH_MAPPING", "MATCH_SEQUENCE", "CONVERT_VALUE",
        "FORMAT_SIMPLE", "CALL_INTRINSIC_1", "LIST_TO_TUPLE", "UNPACK_SEQUENCE", "UNPACK_EX",
        "LOAD_FROM_DICT_OR_GLOBALS", "LOAD_FROM_DICT_OR_DEREF", "STORE_FAST_LOAD_FAST", "EXIT_INIT_CHECK",
        "POP_ITER")},
    **{n: (IN_FIXED, 2) for n in (
        "BINARY_OP", "BINARY_SUBSCR", "COMPARE_OP", "IS_OP", "CONTAINS_OP", "STORE_ATTR", "DELETE_SUBSCR",
        "IMPORT_NAME", "CHECK_EXC_MATCH", "CHECK_EG_MATCH", "PREP_RERAISE_STAR", "SEND", "END_SEND",
        "END_ASYNC_FOR", "FORMAT_WITH_SPEC", "SET_FUNCTION_ATTRIBUTE", "CALL_INTRINSIC_2", "MATCH_KEYS",
        "STORE_FAST_STORE_FAST", "LOAD_SPECIAL")},
    **{n: (IN_FIXED, 3) for n in ("STORE_SUBSCR", "BINARY_SLICE", "LOAD_SUPER_ATTR", "CLEANUP_THROW",
                                   "MATCH_CLASS")},
    **{n: (IN_FIXED, 4) for n in ("STORE_SLICE", "WITH_EXCEPT_START")},
    **{n: (IN_ARG, 0) for n in ("BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_STRING", "COPY", "SWAP",
                                 "RAISE_VARARGS")},
    **{n: (IN_ARG, 1) for n in ("BUILD_CONST_KEY_MAP", "LIST_APPEND", "SET_ADD", "LIST_EXTEND", "SET_UPDATE",
                                 "DICT_UPDATE", "RERAISE")},
    "MAP_ADD": (IN_ARG, 2),
    "DICT_MERGE": (IN_ARG, 2),
    "CALL": (IN_ARG, 2),
    "PRECALL": (IN_ARG, 2),
    "CALL_KW": (IN_ARG, 3),
    "BUILD_MAP": (IN_ARG2, 0),
    "MAKE_FUNCTION": (IN_MAKE_FUNCTION, 1),
    "FORMAT_VALUE": (IN_FORMAT_VALUE, 1),
    "CALL_FUNCTION_EX": (IN_CALL_EX, 3),
    "BUILD_SLICE": (IN_SLICE, 0),
}

FLOW_NEXT, FLOW_JUMP, FLOW_BRANCH, FLOW_STOP = range(4)
_STOP = {"RETURN_VALUE", "RETURN_CONST", "RAISE_VARARGS", "RERAISE"}
_JUMP = {"JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT"}

# CPython 3.12 fuses instruction pairs when it creates a code object (_PyCode_Quicken): the stored
# code then holds these, each followed by its unchanged second half. The verifier reads the stored
# code (what will run), so it accepts exactly these fusions and nothing else specialised.
_SUPERINSTRUCTIONS_312 = {
    "LOAD_FAST__LOAD_FAST": ("LOAD_FAST", "LOAD_FAST"),
    "LOAD_FAST__LOAD_CONST": ("LOAD_FAST", "LOAD_CONST"),
    "LOAD_CONST__LOAD_FAST": ("LOAD_CONST", "LOAD_FAST"),
    "STORE_FAST__LOAD_FAST": ("STORE_FAST", "LOAD_FAST"),
    "STORE_FAST__STORE_FAST": ("STORE_FAST", "STORE_FAST"),
}


def _cache_entries(name: str) -> int:
    entries = getattr(opcode, "_inline_cache_entries", None)
    if isinstance(entries, dict):
        return entries.get(name, 0)
    if entries is not None:
        return entries[opcode.opmap[name]]
    return 0


def _name_shift(name: str, version: tuple[int, int]) -> int:
    if name == "LOAD_GLOBAL":
        return 1
    if name == "LOAD_ATTR" and version >= (3, 12):
        return 1
    if name == "LOAD_SUPER_ATTR":
        return 2
    return 0


def _enum(name: str, version: tuple[int, int]) -> tuple[int, int, int] | None:
    """(shift, max, deny_mask) for operands that index a fixed table in the interpreter."""
    if name == "BINARY_OP":
        return 0, len(opcode._nb_ops) - 1, 0
    if name == "COMPARE_OP":
        shift = {(3, 11): 0, (3, 12): 4}.get(version, 5)
        return shift, len(opcode.cmp_op) - 1, 0
    if name == "CALL_INTRINSIC_1":
        # 0 invalid, 1 INTRINSIC_PRINT (interactive), 2 INTRINSIC_IMPORT_STAR; 7-11 build PEP 695 type
        # parameters and aliases from unchecked tuples (refused, as the source policy refuses the syntax)
        return 0, INTRINSIC_LIST_TO_TUPLE, 0b111
    if name == "CALL_INTRINSIC_2":
        # 1 INTRINSIC_PREP_RERAISE_STAR (except*); 2-5 are PEP 695 type parameters
        return 0, 1, 0b1
    if name == "COPY":
        return 0, 0xFFFF, 0b1  # COPY 0 would read above the top of the stack
    if name == "SWAP":
        return 0, 0xFFFF, 0b11
    if name == "BUILD_SLICE":
        return 0, 3, 0b11
    if name == "RESUME":
        return 0, 7 if version >= (3, 13) else 3, 0
    if name == "LOAD_SMALL_INT":
        return 0, 255, 0
    if name == "CONVERT_VALUE":
        return 0, 3, 0b1
    if name == "FORMAT_VALUE":
        return 0, 7, 0
    if name == "RAISE_VARARGS":
        return 0, 2, 0
    if name in ("IS_OP", "CONTAINS_OP", "CALL_FUNCTION_EX"):
        return 0, 1, 0
    if name == "MAKE_FUNCTION":
        return 0, 15 if version < (3, 13) else 0, 0
    if name == "SET_FUNCTION_ATTRIBUTE":
        # exactly one of 1, 2, 4, 8 (and 16, 3.14's __annotate__): the C pass also refuses 9-15
        return 0, 16 if version >= (3, 14) else 8, 0b11101001
    if name == "LOAD_COMMON_CONSTANT":
        return 0, len(opcode._common_constants) - 1, 0  # AssertionError, NotImplementedError, tuple, all, any
    if name == "LOAD_SPECIAL":
        return 0, len(opcode._special_method_names) - 1, 0  # __enter__, __exit__, __aenter__, __aexit__
    return None


def _argkind(name: str, code: int, version: tuple[int, int]) -> int:
    if name == "MATCH_CLASS":
        return ARG_REPORT  # its keyword attribute names come from a constant tuple, not co_names
    if name in ("LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW", "STORE_FAST_LOAD_FAST",
                "STORE_FAST_STORE_FAST"):
        return ARG_LOCAL_PAIR
    if name == "COPY_FREE_VARS":
        return ARG_FREE_COUNT
    if code in opcode.hasconst:
        return ARG_CONST
    if code in opcode.hasname:
        return ARG_NAME
    if code in opcode.haslocal or code in opcode.hasfree:
        return ARG_LOCAL
    if code in opcode.hasjrel:
        return ARG_JUMP_BWD if "BACKWARD" in name else ARG_JUMP_FWD
    if getattr(opcode, "hasjabs", None) and code in opcode.hasjabs:
        raise RuntimeError(f"absolute jumps are not supported: {name}")
    if _enum(name, version) is not None:
        return ARG_ENUM
    return ARG_NONE


def _inputs(name: str, version: tuple[int, int]) -> tuple[int, int]:
    if name == "CALL" and version == (3, 11):
        return IN_FIXED, 2  # 3.11's stack model counts the arguments as popped by the PRECALL before
    if name == "END_FOR":
        return IN_FIXED, 2 if version == (3, 12) else 1
    if name == "MAKE_FUNCTION" and version >= (3, 13):
        return IN_FIXED, 1
    if name == "DICT_MERGE" and version >= (3, 13):
        return IN_ARG, 4
    return _INPUTS.get(name, (IN_FIXED, 0))


def _flow(name: str, code: int) -> int:
    if name in _STOP:
        return FLOW_STOP
    if name in _JUMP:
        return FLOW_JUMP
    if code in opcode.hasjrel:
        return FLOW_BRANCH
    return FLOW_NEXT


def build_table(version: tuple[int, int] | None = None) -> bytes:
    """The 256-row table for the running interpreter's ``opcode`` module."""
    version = version or sys.version_info[:2]
    rows = [_ROW.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)] * 256
    for name, code in opcode.opmap.items():
        if code >= 256 or name not in ALLOWED or name == "CACHE":
            continue
        kind = _argkind(name, code, version)
        shift, maximum, deny = 0, 0, 0
        if kind == ARG_NAME:
            shift = _name_shift(name, version)
        elif kind == ARG_ENUM:
            shift, maximum, deny = _enum(name, version)  # type: ignore[misc]
        nclass = NC_MATCH_CLASS if kind == ARG_REPORT else _NAME_CLASS.get(name, 0) if kind == ARG_NAME else 0
        in_kind, in_const = _inputs(name, version)
        rows[code] = _ROW.pack(1, _cache_entries(name), kind, shift, nclass, deny, maximum, 0, 0, in_kind, in_const,
                               _flow(name, code), name == "RETURN_GENERATOR", _TYPED.get(name, OP_NONE),
                               _CODE_REQ.get(name, 0))
    if version == (3, 12):
        all_names = list(getattr(opcode, "_specialized_instructions", []))
        specialized = {n: i for i, n in enumerate(dis_names()) if n in all_names}
        for fused, (first, second) in _SUPERINSTRUCTIONS_312.items():
            code = specialized.get(fused)
            if code is not None:
                base = opcode.opmap[first]
                kind = _argkind(first, base, version)
                in_kind, in_const = _inputs(first, version)
                rows[code] = _ROW.pack(1, 0, kind, 0, 0, 0, 0, opcode.opmap[second] + 1, base + 1, in_kind, in_const,
                                       FLOW_NEXT, 0, _TYPED.get(first, OP_NONE), 0)
    return b"".join(rows)


def dis_names() -> list[str]:
    """Names of all 256 opcodes of this interpreter, specialised ones included."""
    import dis

    return list(getattr(dis, "_all_opname", opcode.opname))


ROW_SIZE: int = _ROW.size
EXTENDED_ARG: int = opcode.opmap["EXTENDED_ARG"]
LOAD_CONST: int = opcode.opmap["LOAD_CONST"]
LOAD_NAME: int = opcode.opmap["LOAD_NAME"]
STORE_SUBSCR: int = opcode.opmap["STORE_SUBSCR"]
TABLE: bytes = build_table()
# An exhausted FOR_ITER jumps past the END_FOR it targets (3.12) and the POP_TOP after it (3.13); in
# 3.14 it jumps to the POP_ITER after it, which pops the iterator.
FOR_ITER_CHECK: tuple[int, int, int, int] = (
    opcode.opmap["FOR_ITER"],
    opcode.opmap.get("END_FOR", -1),
    opcode.opmap.get("POP_ITER", opcode.opmap["POP_TOP"]),
    {(3, 11): 0, (3, 12): 1}.get(sys.version_info[:2], 2),
)
