"""The world a bundle's scripts run in: vetted builtins, a guarded ``import``, and the bundle's
own modules executed in fresh namespaces.

The bytecode verifier has already refused code that names what it must not; this module makes
sure the names a script *can* use lead nowhere else: builtins are an allowlist (``getattr`` and
friends apply the attribute rules to their string argument, ``type()`` refuses three arguments
and classes of classes, ``range``/``iter`` hand out interruptible iterators when the C loop behind
them could outlast a deadline), ``import`` resolves only the bundle's modules, ``stdlib_slim`` and
``edge``, and every sandbox gets its own module objects so nothing a script does to them
reaches another bundle or the runtime.
"""
from __future__ import annotations

import abc
import builtins as _builtins
import importlib
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import stdlib_slim
from vm.errors import NotFound
from vm.guard import _guard, context
from vm.policy import rules as policy

# Iterating a range longer than this happens through the interpreter loop (see _LongRange).
RANGE_C_LIMIT = 1 << 20
# pow(a, b) with a result above this many bits is refused: one such C call can hold the GIL for minutes.
MAX_POW_BITS = 1 << 22

_SAFE_BUILTINS = (
    "abs", "aiter", "all", "anext", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable",
    "chr", "classmethod", "complex", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hash", "hex", "int", "isinstance", "issubclass", "len", "list", "map", "max",
    "min", "next", "object", "oct", "ord", "property", "repr", "reversed", "round", "set", "slice",
    "sorted", "staticmethod", "str", "sum", "super", "tuple", "zip", "NotImplemented", "Ellipsis",
    "False", "True", "None",
    # exceptions a script may raise and catch (all are Exception subclasses)
    "ArithmeticError", "AssertionError", "AttributeError", "BufferError", "EOFError", "Exception",
    "ExceptionGroup", "FloatingPointError", "ImportError", "IndexError", "KeyError", "LookupError",
    "MemoryError", "ModuleNotFoundError", "NameError", "NotImplementedError", "OverflowError",
    "RecursionError", "ReferenceError", "RuntimeError", "StopAsyncIteration", "StopIteration",
    "TypeError", "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError",
    "UnicodeTranslateError", "ValueError", "ZeroDivisionError", "Warning", "UserWarning",
    "DeprecationWarning", "RuntimeWarning",
)


class PolicyViolation(Exception):
    """Raised inside a script by a guarded builtin; reported as a policy error."""


def _interruptible(it: Any) -> Iterator:
    for item in it:  # noqa: UP028 - each step must pass through the interpreter loop
        yield item


class _LongRange:
    """A range too long to iterate inside one C call: same arithmetic, Python-level iteration."""

    __slots__ = ("_r",)

    def __init__(self, r: range) -> None:
        self._r = r

    start = property(lambda self: self._r.start)
    stop = property(lambda self: self._r.stop)
    step = property(lambda self: self._r.step)

    def __iter__(self) -> Iterator[int]:
        return _interruptible(self._r)

    def __reversed__(self) -> Iterator[int]:
        return _interruptible(reversed(self._r))

    def __len__(self) -> int:
        return len(self._r)

    def __contains__(self, x: object) -> bool:
        return x in self._r

    def __getitem__(self, i: Any) -> Any:
        got = self._r[i]
        return _safe_range(got.start, got.stop, got.step) if isinstance(got, range) else got

    def __bool__(self) -> bool:
        return bool(self._r)

    def __eq__(self, other: object) -> bool:
        return self._r == (other._r if isinstance(other, _LongRange) else other)

    def __hash__(self) -> int:
        return hash(self._r)

    def __repr__(self) -> str:
        return repr(self._r)

    def index(self, x: int) -> int:
        return self._r.index(x)

    def count(self, x: int) -> int:
        return self._r.count(x)


def _safe_range(*args: Any) -> range | _LongRange:
    r = range(*args)
    try:
        if len(r) <= RANGE_C_LIMIT:  # the hot path: one C call
            return r
    except OverflowError:  # longer than sys.maxsize
        pass
    return _LongRange(r)


def _safe_iter(obj: Any, *sentinel: Any) -> Iterator:
    if sentinel:
        return _interruptible(iter(obj, *sentinel))
    return iter(obj)


def _safe_pow(base: Any, exp: Any, mod: Any = None) -> Any:
    if mod is None and isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        if base.bit_length() * exp > MAX_POW_BITS:
            raise OverflowError(f"pow() result would exceed {MAX_POW_BITS} bits")
    return pow(base, exp) if mod is None else pow(base, exp, mod)


# Classes created by scripts' class statements: they stay mutable (a script may set class
# attributes); every other class a script reaches through type() is made immutable, so no bundle
# can change a library class for the runtime or another bundle.
_script_classes: weakref.WeakSet[type] = weakref.WeakSet()


def _build_class(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
    cls = _builtins.__build_class__(func, name, *bases, **kwargs)
    if isinstance(cls, type):
        _script_classes.add(cls)
    return cls


def _safe_type(*args: Any) -> type:
    if len(args) != 1:
        raise PolicyViolation("type() with three arguments (creating classes dynamically) is not allowed")
    t = type(args[0])
    if issubclass(t, type):
        raise PolicyViolation("type() of a class (its metaclass) is not available in scripts")
    numpy = sys.modules.get("numpy")
    if numpy is not None and issubclass(t, numpy.ndarray):
        from stdlib_slim.slim_numpy import ndarray  # the raw constructor takes buffers and offsets

        return ndarray
    if t not in _script_classes:
        _guard.freeze_type(t)
    return t


def is_script_frame(frame: types.FrameType) -> bool:
    """True if ``frame`` runs a bundle's script code (it sees the sandbox's builtins)."""
    return context.SANDBOX_MARKER in frame.f_builtins


def _guarded_abc_register(cls: Any, subclass: Any) -> Any:
    # A script may register on its own ABCs; a library ABC's registry is process-wide.
    if cls not in _script_classes and is_script_frame(sys._getframe(1)):
        raise PolicyViolation(f"{cls.__name__}.register() would change isinstance() for the whole process")
    return _abc_register(cls, subclass)


_abc_register = abc.ABCMeta.register


def install_process_guards() -> None:
    """Once per process: library entry points whose effects are process-wide refuse script callers."""
    if abc.ABCMeta.register is not _guarded_abc_register:
        abc.ABCMeta.register = _guarded_abc_register


def _check_attr(name: Any, store: bool) -> None:
    if not isinstance(name, str):
        raise TypeError("attribute name must be a string")
    problem = policy.attribute_problem(name, store=store)
    if problem is None and name in policy.FORMAT_METHODS:
        problem = "str.format is only allowed on a literal format string (use an f-string)"
    if problem:
        raise PolicyViolation(problem)


_MISSING = object()


def _safe_getattr(obj: Any, name: str, default: Any = _MISSING) -> Any:
    _check_attr(name, False)
    return getattr(obj, name) if default is _MISSING else getattr(obj, name, default)


def _safe_hasattr(obj: Any, name: str) -> bool:
    _check_attr(name, False)
    return hasattr(obj, name)


def _safe_setattr(obj: Any, name: str, value: Any) -> None:
    _check_attr(name, True)
    setattr(obj, name, value)


def _safe_delattr(obj: Any, name: str) -> None:
    _check_attr(name, True)
    delattr(obj, name)


class Sandbox:
    """One loaded bundle's scripts: modules, builtins and import.

    ``codes`` maps module names (``features``, ``pkg``, ``pkg.util``) to verified code objects;
    ``packages`` names those that are packages; ``edge`` builds the bundle's ``edge`` module.
    Modules execute on first import; ``import_module`` is the way in for the runtime."""

    def __init__(self, codes: dict[str, types.CodeType], packages: frozenset[str],
                 edge: Callable[[], types.ModuleType], log: Callable[[str], None],
                 regex_default_s: float = 0.1) -> None:
        self._codes = codes
        self._packages = packages
        self._edge_factory = edge
        self._log = log
        self._regex_default_s = regex_default_s
        self._modules: dict[str, types.ModuleType] = {}
        self._slim: dict[str, types.ModuleType] = {}
        self.builtins = self._make_builtins()
        install_process_guards()

    # -- services for stdlib_slim wrappers -------------------------------------------------
    def regex_timeout_s(self) -> float:
        ctx = context.current()
        remaining = ctx.remaining() if ctx is not None else self._regex_default_s
        return max(remaining, 0.001)

    @staticmethod
    def violation(message: str) -> None:
        raise PolicyViolation(message)

    def bundle_module(self, name: str) -> types.ModuleType | None:
        """The bundle's module ``name`` if it has been executed."""
        return self._modules.get(name)

    # -- builtins ----------------------------------------------------------------------------
    def _make_builtins(self) -> dict[str, Any]:
        b = {name: getattr(_builtins, name) for name in _SAFE_BUILTINS}
        b.update({
            "range": _safe_range, "iter": _safe_iter, "pow": _safe_pow, "type": _safe_type,
            "getattr": _safe_getattr, "hasattr": _safe_hasattr, "setattr": _safe_setattr,
            "delattr": _safe_delattr, "print": self._print,
            "__build_class__": _build_class, "__import__": self._import, context.SANDBOX_MARKER: True,
        })
        return b

    def _print(self, *args: Any, sep: str | None = " ", end: str | None = "\n", **_: Any) -> None:
        sep = " " if sep is None else sep
        self._log(sep.join(str(a) for a in args))

    # -- import ------------------------------------------------------------------------------
    def import_module(self, name: str) -> types.ModuleType:
        """The bundle module ``name``, executing it (and what it imports) on first use."""
        module = self._modules.get(name)
        if module is not None:
            return module
        code = self._codes.get(name)
        if code is None:
            raise ModuleNotFoundError(f"no module named {name!r} in the bundle", name=name)
        parent, _, child = name.rpartition(".")
        parent_module = self.import_module(parent) if parent else None
        module = types.ModuleType(name)
        package = name if name in self._packages else name.rpartition(".")[0]
        module.__dict__.update({"__builtins__": self.builtins, "__package__": package})
        self._modules[name] = module
        try:
            exec(code, module.__dict__)
        except BaseException:
            del self._modules[name]
            raise
        if parent_module is not None:
            parent_module.__dict__[child] = module
        return module

    def _slim_module(self, name: str) -> types.ModuleType:
        module = self._slim.get(name)
        if module is None:
            module = self._edge_factory() if name == "edge" else stdlib_slim.build(name, self)
            self._slim[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                module_parent = self._slim_module(parent)
                module_parent.__dict__[child] = module
        return module

    def _resolve(self, name: str, package: str, level: int) -> str:
        if level == 0:
            return name
        bits = package.split(".") if package else []
        if level - 1 > len(bits) or not package:
            raise ImportError("attempted relative import beyond the bundle's top-level package")
        base = ".".join(bits[: len(bits) - (level - 1)])
        return f"{base}.{name}" if name else base

    def _import(self, name: str, globals: dict | None = None, locals: Any = None,
                fromlist: Any = (), level: int = 0) -> types.ModuleType:
        if type(fromlist) is list and level == 0:
            return _import_for_c(name)
        package = (globals or {}).get("__package__") or ""
        absolute = self._resolve(name, package, level)
        if absolute in self._codes:
            module = self.import_module(absolute)
            for item in fromlist or ():
                sub = f"{absolute}.{item}"
                if sub in self._codes:
                    self.import_module(sub)
            return module if fromlist else self.import_module(absolute.partition(".")[0])
        if absolute in policy.ALLOWED_IMPORTS:
            module = self._slim_module(absolute)
            for item in fromlist or ():
                sub = f"{absolute}.{item}"
                if sub in policy.ALLOWED_IMPORTS:
                    self._slim_module(sub)
            return module if fromlist else self._slim_module(absolute.partition(".")[0])
        raise PolicyViolation(f"import of {absolute!r} is not allowed in the sandbox")

    def entry(self, spec: str) -> Callable[..., Any]:
        """The callable named by ``"module:function"``."""
        module_name, _, func = spec.partition(":")
        if module_name not in self._codes:
            raise NotFound(f"entry {spec}: no module {module_name!r} in the bundle")
        module = self.import_module(module_name)
        fn = module.__dict__.get(func)
        if not callable(fn):
            raise NotFound(f"entry {spec}: no function {func!r} in module {module_name!r}")
        return fn


_thread = threading.local()


def prepare_thread() -> None:
    """Once per worker thread, after numpy is loaded: route its array data through the budget."""
    if not getattr(_thread, "numpy", False) and "numpy" in sys.modules:
        _guard.numpy_install()
        _thread.numpy = True


# Lazy imports that library C code performs while a script's frame is current: CPython resolves
# them through the current frame's ``__import__`` (ours), but hands the module to the C caller only.
_C_LAZY_IMPORTS = ("numpy.", "_strptime", "encodings.")


def _import_for_c(name: str) -> types.ModuleType:
    """``PyImport_Import`` from C code (it passes a list as ``fromlist``; compiled code never
    does, and scripts cannot call ``__import__`` themselves): a module the process already has,
    or one of the known lazy imports of the libraries scripts use."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    if name.startswith(_C_LAZY_IMPORTS) or name in ("_strptime",):
        return importlib.import_module(name)
    raise PolicyViolation(f"import of {name!r} is not allowed in the sandbox")


def bundle_frames(tb: types.TracebackType | None, files: set[str]) -> list[tuple[str, int, str]]:
    """(file, line, function) of the traceback's frames that belong to the bundle's scripts."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename in files:
            frames.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    return frames

