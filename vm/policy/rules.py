"""The sandbox policy as data: one source of truth for the source check at pack time and the
bytecode check at load time (and for the runtime's ``getattr``/``import`` guards).

The rules, in words:
- a script may import only the vetted ``stdlib_slim`` modules, ``edge`` and its own modules;
- it may not read, write or delete attributes whose names start with ``_`` (a handful of safe
  dunders excepted: ``__init__`` for ``super().__init__()``, ``__name__``, ``__doc__``, and the
  ordinary operator/protocol methods), nor the introspection attributes of frames, code objects,
  tracebacks, generators and coroutines, nor the file and raw-memory doors of numpy arrays;
  four exceptions are decided at run time, where the object is known (``ATTRIBUTE_GUARDS``):
  single-underscore attributes of the bundle's own objects, ``obj.__class__`` (what ``type(obj)``
  gives), ``object.__setattr__`` (on the bundle's own instances: frozen dataclasses'
  ``__post_init__``) and ``obj.format``/``format_map`` (below);
- it may not read global names that start with ``__`` (the compiler's own ``__name__`` and
  ``__annotations__``, and a module's metadata constants such as ``__author__``, excepted); its own
  ``_private`` names are fine;
- at module and class level it may assign the harmless dunders and define the ordinary dunder
  methods, but not hooks that run code at surprising times (``__del__``, ``__getattr__``,
  ``__init_subclass__``, ``__set_name__``, descriptors, ``__reduce__``...);
- ``str.format``/``format_map`` only on a format string whose fields are plain names or positions
  (no ``.attr`` or ``[item]`` inside fields): checked at pack time for a literal, at run time for a
  string built or bound elsewhere; an attribute named ``format`` of anything else only if the
  bundle's own code defines it.
This module must stay importable with the standard library alone (the compile worker imports it
under every target interpreter).
"""
from __future__ import annotations

import difflib
import re
import string

# Modules a script may import (besides its own modules). stdlib_slim provides each of these.
SLIM_MODULES: frozenset[str] = frozenset({
    "math", "statistics", "collections", "collections.abc", "itertools", "functools",
    "operator", "heapq", "bisect", "json", "re", "time", "datetime", "random", "string", "hashlib",
    "typing", "dataclasses", "enum", "__future__", "copy", "base64",
    "unicodedata", "abc", "numpy",
})
RUNTIME_MODULES: frozenset[str] = frozenset({"edge"})
ALLOWED_IMPORTS: frozenset[str] = SLIM_MODULES | RUNTIME_MODULES

# Ordinary operator and protocol methods: classes may define them and code may call them.
PROTOCOL_DUNDERS: frozenset[str] = frozenset({
    "__init__", "__repr__", "__str__", "__format__", "__bytes__", "__hash__", "__bool__",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
    "__len__", "__length_hint__", "__iter__", "__next__", "__reversed__", "__contains__",
    "__getitem__", "__setitem__", "__delitem__", "__missing__",
    "__enter__", "__exit__", "__aenter__", "__aexit__", "__aiter__", "__anext__", "__await__",
    "__call__", "__post_init__",
    "__add__", "__sub__", "__mul__", "__matmul__", "__truediv__", "__floordiv__", "__mod__",
    "__divmod__", "__pow__", "__lshift__", "__rshift__", "__and__", "__xor__", "__or__",
    "__radd__", "__rsub__", "__rmul__", "__rmatmul__", "__rtruediv__", "__rfloordiv__", "__rmod__",
    "__rdivmod__", "__rpow__", "__rlshift__", "__rrshift__", "__rand__", "__rxor__", "__ror__",
    "__iadd__", "__isub__", "__imul__", "__imatmul__", "__itruediv__", "__ifloordiv__", "__imod__",
    "__ipow__", "__ilshift__", "__irshift__", "__iand__", "__ixor__", "__ior__",
    "__neg__", "__pos__", "__abs__", "__invert__", "__complex__", "__int__", "__float__",
    "__index__", "__round__", "__trunc__", "__floor__", "__ceil__",
})

# Dunder attributes any code may read: data with no references behind it, plus the protocol
# methods (``super().__init__(...)``, ``super().__eq__(other)``).
READABLE_DUNDERS: frozenset[str] = PROTOCOL_DUNDERS | {"__name__", "__qualname__", "__doc__"}

# A module's metadata constants: data a module (or class) may define and its code may read back
# as globals. None of them is a builtin, so a read finds the module's value or fails.
METADATA_DUNDERS: frozenset[str] = frozenset({
    "__all__", "__version__", "__author__", "__doc__", "__contact__", "__email__", "__license__",
    "__copyright__", "__credits__", "__maintainer__", "__status__", "__date__",
})

# Names a module or class body may assign (the compiler writes some of them itself).
ASSIGNABLE_DUNDERS: frozenset[str] = PROTOCOL_DUNDERS | METADATA_DUNDERS | {
    "__slots__", "__match_args__",
    "__qualname__", "__module__", "__classcell__", "__firstlineno__", "__static_attributes__",
    *("__annotate__", "__annotate_func__", "__conditional_annotations__", "__classdictcell__"),  # 3.14
}
# ...of which these are written in a fixed pattern (checked in bytecode): by the compiler, or a
# literal tuple of attribute names (``__match_args__``).
COMPILER_WRITTEN: frozenset[str] = frozenset({
    "__module__", "__qualname__", "__classcell__", "__firstlineno__", "__static_attributes__",
    "__match_args__", "__annotate__", "__annotate_func__", "__conditional_annotations__", "__classdictcell__",
})

# Attributes the static checks cannot judge, because the answer depends on the object: the compiler
# (vm/tools/compile_worker.py) writes ``obj._x`` as ``__edge_getattr__(obj, "_x")`` (and
# ``obj.__class__``, ``obj.format`` and ``obj.format_map`` likewise), ``obj._x = v`` as ``__edge_setattr__(v, obj, "_x")``, and other stores
# and deletes as ``__edge_attrs__(obj)["_x"]``. These sandbox builtins (vm.sandbox.builtins) allow
# single-underscore names only on the bundle's own objects, answer ``__class__`` as ``type()``
# does and check a format string's fields before they hand out its ``format``; the bytecode itself
# still may not name them (``format`` only right after a literal it checks).
# Dunder reads the guards answer: ``obj.__class__`` (what ``type(obj)`` gives) and
# ``object.__setattr__`` (a frozen dataclass's ``__post_init__``: the bundle's own instances only).
RUNTIME_DUNDERS: frozenset[str] = frozenset({"__class__", "__setattr__"})

ATTRIBUTE_GUARDS: dict[str, str] = {"load": "__edge_getattr__", "assign": "__edge_setattr__",
                                    "store": "__edge_attrs__"}

# Global names code may read although they start with "__": the compiler's own loads, the guards,
# a module's metadata, and the protocol methods (a class body aliasing its own ``__rmul__ = __mul__``).
# None of the last two groups is a builtin, so a read finds what the script defined or fails.
READABLE_DUNDER_GLOBALS: frozenset[str] = frozenset({"__name__", "__annotations__", "__conditional_annotations__",
                                                     *METADATA_DUNDERS,
                                                     *PROTOCOL_DUNDERS, *ATTRIBUTE_GUARDS.values()})

# Names that must never be rebound: the class machinery relies on them.
PROTECTED_NAMES: frozenset[str] = frozenset({"super", "__builtins__", "__name__", "__import__",
                                             "__build_class__", *ATTRIBUTE_GUARDS.values()})

# Introspection and raw-access attributes refused whatever their spelling.
INTROSPECTION_ATTRS: frozenset[str] = frozenset({
    # frames
    "f_back", "f_builtins", "f_code", "f_globals", "f_lasti", "f_lineno", "f_locals", "f_trace",
    "f_trace_lines", "f_trace_opcodes", "f_generator",
    # tracebacks
    "tb_frame", "tb_lasti", "tb_lineno", "tb_next",
    # generators, coroutines, async generators
    "gi_code", "gi_frame", "gi_running", "gi_yieldfrom", "gi_suspended",
    "cr_await", "cr_code", "cr_frame", "cr_origin", "cr_running", "cr_suspended",
    "ag_await", "ag_code", "ag_frame", "ag_running", "ag_suspended",
    # code objects
    "co_argcount", "co_cellvars", "co_code", "co_consts", "co_exceptiontable", "co_filename",
    "co_firstlineno", "co_flags", "co_freevars", "co_kwonlyargcount", "co_linetable", "co_lnotab",
    "co_name", "co_names", "co_nlocals", "co_posonlyargcount", "co_qualname", "co_stacksize",
    "co_varnames", "co_positions", "co_lines",
    # class hierarchy, Python 2 spellings
    "mro", "func_globals", "func_code", "func_closure", "im_func", "im_self", "im_class",
    # numpy arrays and bit generators: file and raw-memory doors; in-place resize (with
    # refcheck=False it frees memory that views still use)
    "tofile", "dump", "ctypes", "cffi", "capsule", "bit_generator", "resize",
})

# Calls the sandbox refuses to provide at all (checked in source for a clearer error; at run
# time these names simply do not exist in the sandbox's builtins).
FORBIDDEN_BUILTINS: frozenset[str] = frozenset({
    "eval", "exec", "compile", "open", "input", "__import__", "globals", "locals", "vars", "dir",
    "breakpoint", "memoryview", "help", "exit", "quit", "copyright", "credits", "license", "id",
    "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit",
})

FORMAT_METHODS: frozenset[str] = frozenset({"format", "format_map"})

_SIMPLE_FIELD = re.compile(r"\A(?:[0-9]*|[A-Za-z_][A-Za-z0-9_]*)\Z")


def attribute_problem(name: str, *, store: bool = False) -> str | None:
    """Why reading (or, with ``store``, writing/deleting) attribute ``name`` is refused."""
    if name.startswith("_"):
        if not store and name in READABLE_DUNDERS:
            return None
        return f"attribute '{name}' starts with '_'"
    if name in INTROSPECTION_ATTRS:
        return f"attribute '{name}' gives access to interpreter internals"
    return None


def private_attribute(name: str) -> bool:
    """A single-underscore attribute name (``_cache``, ``_replace``, a mangled ``_Cls__x``): allowed,
    at run time, on the bundle's own objects only."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def guarded_attribute(name: str, *, store: bool = False) -> bool:
    """True if the static checks leave attribute ``name`` to the run-time guards (``ATTRIBUTE_GUARDS``)."""
    return private_attribute(name) or (not store and (name in RUNTIME_DUNDERS or name in FORMAT_METHODS))


def named_attribute_problem(name: str, *, store: bool = False) -> str | None:
    """Why reaching attribute ``name`` by a name chosen at run time is refused: ``getattr`` and
    friends, ``operator.attrgetter``/``methodcaller``, class patterns and ``__match_args__``, field
    names of generated classes. The attribute rule, plus ``format``/``format_map``: those are safe only
    on a literal format string, and a name chosen at run time never is one."""
    problem = attribute_problem(name, store=store)
    if problem is None and name in FORMAT_METHODS:
        problem = f"attribute '{name}' is only reachable on a literal format string (use an f-string)"
    return problem


def global_read_problem(name: str) -> str | None:
    """Why reading global or builtin name ``name`` is refused."""
    if name.startswith("__") and name not in READABLE_DUNDER_GLOBALS:
        return f"name '{name}' is reserved"
    return None


def global_store_problem(name: str) -> str | None:
    """Why assigning or deleting module/class-level name ``name`` is refused."""
    if name in PROTECTED_NAMES:
        return f"name '{name}' cannot be rebound"
    if name.startswith("__") and name.endswith("__") and name not in ASSIGNABLE_DUNDERS:
        return f"'{name}' cannot be defined here (a hook that runs code at surprising times)"
    return None


def import_problem(module: str, bundle_modules: frozenset[str] | set[str]) -> str | None:
    """Why importing ``module`` (absolute, dotted) is refused."""
    if module in ALLOWED_IMPORTS or module in bundle_modules:
        return None
    close = difflib.get_close_matches(module, sorted(ALLOWED_IMPORTS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return (f"import of '{module}' is not allowed{hint}; scripts may import {', '.join(sorted(ALLOWED_IMPORTS))} "
            "and the bundle's own modules")


def import_from_problem(name: str) -> str | None:
    if name == "*":
        return "'from ... import *' is not allowed"
    if name.startswith("_"):
        return f"importing '{name}' (a name that starts with '_') is not allowed"
    return None


def format_string_problem(text: object) -> str | None:
    """Why ``text.format(...)`` is refused: the receiver must be a literal string whose fields
    are plain positions or names."""
    if not isinstance(text, str):
        return "str.format is only allowed on a literal format string (use an f-string)"
    try:
        pending = [text]
        while pending:
            for _literal, field, spec, _conv in string.Formatter().parse(pending.pop()):
                if field is None:
                    continue
                if not _SIMPLE_FIELD.match(field):
                    return f"format field '{{{field}}}' reaches into attributes or items"
                if spec:
                    pending.append(spec)
    except ValueError as exc:
        return f"invalid format string: {exc}"
    return None
