"""The builtins a bundle's scripts see: an allowlist, with guarded versions of the builtins that
could lead elsewhere.

``getattr`` and friends apply the attribute rule (``vm.policy.rules``) to their string argument;
``type()`` refuses three arguments and classes of classes, and freezes the library classes it hands
out; ``range``/``iter`` hand out interruptible iterators when the C loop behind them could outlast
a deadline. Library entry points whose effects are process-wide (``ABCMeta.register``) refuse script
callers, and int's division and power refuse, inside guarded calls, operands too big to compute
within a deadline (``vm.guard._guard.int_caps_install``).
"""
from __future__ import annotations

import abc
import builtins as _builtins
import functools
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import stdlib_slim
from vm.guard import _guard, context
from vm.policy import rules

# Iterating a range longer than this happens through the interpreter loop (see _LongRange).
RANGE_C_LIMIT = 1 << 20

_SAFE_BUILTINS = (
    "abs", "aiter", "all", "anext", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable",
    "chr", "classmethod", "complex", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hash", "hex", "int", "isinstance", "issubclass", "len", "list", "map", "max",
    "min", "next", "object", "oct", "ord", "pow", "property", "repr", "reversed", "round", "set", "slice",
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


class WorkLimitExceeded(MemoryError):
    """Raised inside a script by one integer operation that would need more work than one call may
    do (``native/guard/intcap.c``); reported as a resource error, like running out of memory."""


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
        if type(x) in (int, bool):  # arithmetic, one C call
            return x in self._r
        for item in self._r:  # anything else is compared item by item: through the interpreter loop
            if item is x or item == x:
                return True
        return False

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
        if type(x) in (int, bool):
            return self._r.index(x)
        for i, item in enumerate(self._r):
            if item is x or item == x:
                return i
        raise ValueError("sequence.index(x): x not in sequence")

    def count(self, x: int) -> int:
        if type(x) in (int, bool):
            return self._r.count(x)
        return sum(1 for item in self._r if item is x or item == x)


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


# Classes created by scripts' class statements: they stay mutable (a script may set class
# attributes); every other class a script reaches through type() is made immutable, so no bundle
# can change a library class for the runtime or another bundle.
_script_classes: weakref.WeakSet[type] = weakref.WeakSet()

# Objects whose single-underscore attributes a script may use (rules.private_attribute): instances
# of (and the) script classes whose every base is such a class or a plain builtin data type, with no
# library metaclass; and the bundle's own modules. Looking ``_x`` up on them only finds what the
# bundle itself put there (builtin data types have no such attributes; tests/policy checks it).
# Keyed by id for a lookup in C on every guarded access; an entry leaves when its class dies (the
# weak reference's callback runs before the id can be reused).
_own_classes: dict[int, weakref.ref] = {}
_own_modules: weakref.WeakSet[types.ModuleType] = weakref.WeakSet()
_DATA_BASES: frozenset[type] = frozenset(
    {object, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset}
    | {t for t in vars(_builtins).values() if isinstance(t, type) and issubclass(t, BaseException)})


def register_class(cls: type) -> None:
    """Record ``cls`` as created by the bundle (a class statement, ``namedtuple``): it stays mutable,
    and owns its private attributes if all its bases do (see ``_own_classes``)."""
    _script_classes.add(cls)
    if type(cls) is type and all(b in _DATA_BASES or id(b) in _own_classes for b in cls.__mro__[1:]):
        key = id(cls)
        _own_classes[key] = weakref.ref(cls, lambda _ref, key=key: _own_classes.pop(key, None))


def register_module(module: types.ModuleType) -> None:
    """Record one of the bundle's own modules (its ``_private`` globals are the script's)."""
    _own_modules.add(module)


def _owns_private(obj: Any) -> bool:
    """True if ``obj``'s single-underscore attributes are the bundle's own."""
    t = type(obj)
    if t is type:
        return id(obj) in _own_classes
    if t is super:  # the lookup walks the MRO of the instance's class
        return id(obj.__self_class__) in _own_classes
    if t is types.ModuleType:
        return obj in _own_modules
    return id(t) in _own_classes


def _build_class(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
    cls = _builtins.__build_class__(func, name, *bases, **kwargs)
    if isinstance(cls, type):
        register_class(cls)
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
        stdlib_slim.freeze_class(t)
    return t


def is_script_frame(frame: types.FrameType) -> bool:
    """True if ``frame`` runs a bundle's script code (it sees the sandbox's builtins)."""
    return context.SANDBOX_MARKER in frame.f_builtins


def _guarded_abc_register(cls: Any, subclass: Any) -> Any:
    # A script may register on its own ABCs; a library ABC's registry is process-wide. Any script
    # frame on the stack counts (library code calls what a script hands it: heapq.merge's key),
    # up to an import: a library module that C code imports lazily registers its own classes.
    if cls not in _script_classes:
        frame: types.FrameType | None = sys._getframe(1)
        while frame is not None and not frame.f_code.co_filename.startswith("<frozen importlib"):
            if is_script_frame(frame):
                raise PolicyViolation(f"{cls.__name__}.register() would change isinstance() for the whole process")
            frame = frame.f_back
    return _abc_register(cls, subclass)


_abc_register = abc.ABCMeta.register


def install_process_guards() -> None:
    """Once per process: library entry points whose effects are process-wide refuse script callers."""
    if abc.ABCMeta.register is not _guarded_abc_register:
        abc.ABCMeta.register = _guarded_abc_register
    _guard.int_caps_install(WorkLimitExceeded)
    _guard.guard_finalizers(context.SANDBOX_MARKER)  # script generators' handlers run only in their call


def _check_attr(obj: Any, name: Any, store: bool) -> None:
    if type(name) is not str:  # a subclass could answer the checks below for another name
        raise TypeError("attribute name must be a str")
    problem = rules.named_attribute_problem(name, store=store)
    if problem is not None and not (rules.private_attribute(name) and _owns_private(obj)):
        raise PolicyViolation(problem)


_MISSING = object()


def _safe_getattr(obj: Any, name: str, default: Any = _MISSING) -> Any:
    _check_attr(obj, name, False)
    return getattr(obj, name) if default is _MISSING else getattr(obj, name, default)


def _safe_hasattr(obj: Any, name: str) -> bool:
    _check_attr(obj, name, False)
    return hasattr(obj, name)


def _safe_setattr(obj: Any, name: str, value: Any) -> None:
    _check_attr(obj, name, True)
    setattr(obj, name, value)


def _safe_delattr(obj: Any, name: str) -> None:
    _check_attr(obj, name, True)
    delattr(obj, name)


_private_name = functools.lru_cache(maxsize=1024)(rules.private_attribute)


def _guarded_load(obj: Any, name: str) -> Any:
    """``obj.<name>`` for the names the compiler leaves to run time (rules.ATTRIBUTE_GUARDS):
    ``__class__`` is what ``type(obj)`` gives, a private name needs the bundle's own object."""
    if id(type(obj)) in _own_classes and type(name) is str and _private_name(name):  # the hot path
        return getattr(obj, name)
    if type(name) is str and name == "__class__":
        return _safe_type(obj)
    if type(name) is str and name in rules.FORMAT_METHODS:
        return _format_attr(obj, name)
    if obj is object and type(name) is str and name == "__setattr__":
        return _object_setattr
    _check_attr(obj, name, False)
    return getattr(obj, name)


def _object_setattr(target: Any, name: str, value: Any) -> None:
    """``object.__setattr__`` as scripts get it: past the class's own ``__setattr__`` (a frozen
    dataclass's), on the bundle's own instances only, under the attribute rules."""
    if id(type(target)) not in _own_classes:
        raise PolicyViolation("object.__setattr__ is available only on instances of the bundle's own classes")
    _check_attr(target, name, True)
    object.__setattr__(target, name, value)


_type_dict = type.__dict__["__dict__"].__get__  # a class's own namespace, whatever the class says
_type_mro = type.__dict__["__mro__"].__get__
_FORMAT_REFUSED = ("attribute '{}' is only reachable on a format string whose fields are plain names or "
                   "positions, or on the bundle's own objects")
_TEMPLATE_CACHE_CHARS = 256  # short templates' verdicts are cached; longer ones are parsed per call


@functools.lru_cache(maxsize=1024)
def _cached_format_problem(text: str) -> str | None:
    return rules.format_string_problem(text)


def _defined_by_own_class(cls: type, name: str) -> bool | None:
    """Whether the class that ``name`` resolves to on ``cls`` is the bundle's own (None: no class
    on ``cls``'s MRO defines it)."""
    for klass in _type_mro(cls):
        if name in _type_dict(klass):
            return id(klass) in _own_classes
    return None


def _format_attr(obj: Any, name: str) -> Any:
    """``obj.format`` / ``obj.format_map``: a string's only if its fields are plain names or
    positions (a field like ``{0.__globals__}`` walks attributes of the arguments), anything
    else's only if the bundle's own code defines it (a library's ``format`` may take a template)."""
    if isinstance(obj, str):
        text = str.__str__(obj)  # the characters str.format reads, whatever a subclass says
        problem = (_cached_format_problem(text) if len(text) <= _TEMPLATE_CACHE_CHARS
                   else rules.format_string_problem(text))
        if problem is not None:
            raise PolicyViolation(problem)
        return getattr(obj, name)
    t = type(obj)
    if t is types.ModuleType:
        own = obj in _own_modules
    elif t is super:  # would resolve past the class it names: not worth the bookkeeping
        own = False
    elif isinstance(obj, type):  # the class's MRO first, then its metaclass's
        own = _defined_by_own_class(obj, name)
        if own is None:
            own = _defined_by_own_class(t, name)
    else:
        own = _defined_by_own_class(t, name)
        if own is None:  # an instance attribute (what the bundle's code stored), or none at all
            own = id(t) in _own_classes
    if not own:
        raise PolicyViolation(_FORMAT_REFUSED.format(name))
    return getattr(obj, name)


def _guarded_assign(value: Any, obj: Any, name: str) -> None:
    """``obj.<name> = value`` as compiled (the arguments in the order Python evaluates them)."""
    if id(type(obj)) in _own_classes and type(name) is str and _private_name(name):  # the hot path
        setattr(obj, name, value)
    else:
        _safe_setattr(obj, name, value)


class _GuardedStore:
    """``obj._x = v``, ``obj._x += v`` and ``del obj._x`` as compiled: ``__edge_attrs__(obj)["_x"]``."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getitem__(self, name: str) -> Any:
        return _guarded_load(self._obj, name)

    def __setitem__(self, name: str, value: Any) -> None:
        _guarded_assign(value, self._obj, name)

    def __delitem__(self, name: str) -> None:
        _safe_delattr(self._obj, name)


def make_builtins(*, print_: Callable[..., None], import_: Callable[..., Any]) -> dict[str, Any]:
    """A fresh builtins dict for one sandbox, with its ``print`` and ``__import__``."""
    b = {name: getattr(_builtins, name) for name in _SAFE_BUILTINS}
    b.update({
        "range": _safe_range, "iter": _safe_iter, "type": _safe_type,
        "getattr": _safe_getattr, "hasattr": _safe_hasattr, "setattr": _safe_setattr,
        "delattr": _safe_delattr, "print": print_,
        rules.ATTRIBUTE_GUARDS["load"]: _guarded_load, rules.ATTRIBUTE_GUARDS["assign"]: _guarded_assign,
        rules.ATTRIBUTE_GUARDS["store"]: _GuardedStore,
        "__build_class__": _build_class, "__import__": import_, context.SANDBOX_MARKER: True,
    })
    return b
