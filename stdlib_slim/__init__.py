"""The vetted library that scripts import by the usual names (``import math``,
``from collections import Counter``).

Each vetted module is a fresh ``types.ModuleType`` per sandbox holding only allowlisted members:
never the real module object, so a script cannot walk from it to other modules
(``json.codecs.sys``, ``random._os``). Plain re-exports are listed in ``PLAIN``; modules that
need wrappers (deadline-aware regexes, interruptible iterators, per-sandbox random state,
checked attribute helpers) build their members in their own files here. Library classes handed
to scripts are made immutable once (``vm.guard._guard.freeze_type``) so that no script can
monkeypatch a class the runtime or another bundle uses. See README.md in this folder for what
each module exposes and what is left out on purpose.
"""
from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Any

from vm.guard import _guard
from vm.policy import rules

# module name -> (real module, names re-exported unchanged)
PLAIN: dict[str, tuple[str, tuple[str, ...]]] = {
    "math": ("math", (
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil", "copysign", "cos",
        "cosh", "degrees", "dist", "e", "erf", "erfc", "exp", "exp2", "expm1", "fabs", "floor", "fmod",
        "frexp", "fsum", "gamma", "gcd", "hypot", "inf", "isclose", "isfinite", "isinf", "isnan",
        "isqrt", "lcm", "ldexp", "lgamma", "log", "log10", "log1p", "log2", "modf", "nan", "nextafter",
        "pi", "prod", "radians", "remainder", "sin", "sinh", "sqrt", "tan", "tanh", "tau", "trunc",
        "ulp",
    )),
    "statistics": ("statistics", (
        "StatisticsError", "NormalDist", "correlation", "covariance", "fmean", "geometric_mean",
        "harmonic_mean", "linear_regression", "mean", "median", "median_grouped", "median_high",
        "median_low", "mode", "multimode", "pstdev", "pvariance", "quantiles", "stdev", "variance",
    )),
    "collections.abc": ("collections.abc", (
        "AsyncGenerator", "AsyncIterable", "AsyncIterator", "Awaitable", "ByteString", "Callable",
        "Collection", "Container", "Coroutine", "Generator", "Hashable", "ItemsView", "Iterable",
        "Iterator", "KeysView", "Mapping", "MappingView", "MutableMapping", "MutableSequence",
        "MutableSet", "Reversible", "Sequence", "Set", "Sized", "ValuesView",
    )),
    "heapq": ("heapq", ("heapify", "heappop", "heappush", "heappushpop", "heapreplace", "merge",
                        "nlargest", "nsmallest")),
    "bisect": ("bisect", ("bisect", "bisect_left", "bisect_right", "insort", "insort_left", "insort_right")),
    "json": ("json", ("JSONDecodeError", "dumps", "loads")),
    "time": ("time", (
        "altzone", "daylight", "gmtime", "localtime", "mktime", "monotonic", "monotonic_ns",
        "perf_counter", "perf_counter_ns", "strftime", "strptime", "struct_time", "time", "time_ns",
        "timezone", "tzname",
    )),
    "datetime": ("datetime", ("MAXYEAR", "MINYEAR", "date", "datetime", "time", "timedelta", "timezone",
                              "tzinfo")),
    "hashlib": ("hashlib", (
        "blake2b", "blake2s", "md5", "new", "sha1", "sha224", "sha256", "sha384", "sha3_224", "sha3_256",
        "sha3_384", "sha3_512", "sha512", "algorithms_available", "algorithms_guaranteed",
    )),
    "__future__": ("__future__", ("annotations",)),
    "base64": ("base64", ("b16decode", "b16encode", "b32decode", "b32encode", "b64decode", "b64encode",
                          "urlsafe_b64decode", "urlsafe_b64encode", "standard_b64decode",
                          "standard_b64encode")),
    "unicodedata": ("unicodedata", ("category", "combining", "decimal", "digit", "east_asian_width",
                                    "lookup", "name", "normalize", "numeric", "unidata_version")),
    "abc": ("abc", ("ABC", "abstractmethod")),
    "copy": ("copy", ("copy", "deepcopy")),
}

# module name -> "stdlib_slim.<file>" whose build(env) returns the members
WRAPPED: dict[str, str] = {
    "re": "stdlib_slim.slim_re",
    "random": "stdlib_slim.slim_random",
    "itertools": "stdlib_slim.slim_itertools",
    "operator": "stdlib_slim.slim_operator",
    "enum": "stdlib_slim.slim_enum",
    "dataclasses": "stdlib_slim.slim_dataclasses",
    "numpy": "stdlib_slim.slim_numpy",
    "collections": "stdlib_slim.slim_collections",
    "functools": "stdlib_slim.slim_functools",
    "typing": "stdlib_slim.slim_typing",
    "string": "stdlib_slim.slim_string",
}

MODULES: frozenset[str] = frozenset(PLAIN) | frozenset(WRAPPED)

_shared: dict[str, dict[str, Any]] = {}


def _plain_members(name: str) -> dict[str, Any]:
    members = _shared.get(name)
    if members is None:
        real, names = PLAIN[name]
        module = importlib.import_module(real)
        members = {n: getattr(module, n) for n in names if hasattr(module, n)}
        freeze_classes(members)
        _shared[name] = members
    return members


def freeze_classes(members: dict[str, Any]) -> None:
    """Make every library class among ``members`` (and their submodules) immutable, and the
    library functions and singletons among them and in those classes read-only
    (``vm.guard._guard.freeze_object``): one bundle's ``json.loads.note = ...`` would reach every
    other bundle (process-wide, idempotent)."""
    for value in members.values():
        if isinstance(value, type):
            freeze_class(value)
        elif isinstance(value, types.ModuleType):
            freeze_classes(vars(value))
        elif "<locals>" not in getattr(value, "__qualname__", ""):
            _guard.freeze_object(value)  # shared; closures a wrapper made for this bundle are its own


_IMMUTABLE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: frozen already, or a static (C) type


def freeze_class(cls: type) -> None:
    """Make library class ``cls`` immutable and what a script can read from it (``cls.method``, a
    static method, ``cls.__init__``, a class-level instance) read-only."""
    if cls.__flags__ & _IMMUTABLE:
        return
    _guard.freeze_type(cls)
    for name, attr in vars(cls).items():
        if rules.attribute_problem(name) is None:
            if isinstance(attr, type):
                freeze_class(attr)
            else:
                _guard.freeze_object(getattr(attr, "__func__", attr))


def preload() -> None:
    """Import everything the vetted modules are built from, and build their shared members: a
    worker process does this before it locks itself down, after which nothing can be imported."""
    for name in PLAIN:
        _plain_members(name)
    for path in WRAPPED.values():
        importlib.import_module(path)
    # what library code imports lazily while scripts run (time.strptime, str.encode, numpy)
    for lazy in ("_strptime", "encodings.utf_16", "encodings.utf_32", "encodings.latin_1", "encodings.ascii",
                 "encodings.idna", "encodings.unicode_escape", "encodings.raw_unicode_escape", "numpy.linalg",
                 "numpy.fft", "numpy.random", "numpy.lib.stride_tricks"):
        importlib.import_module(lazy)


def build(name: str, env: Any) -> types.ModuleType:
    """A fresh vetted module ``name`` for one sandbox. ``env`` gives wrappers the sandbox's
    services (``env.remaining_s()`` for deadlines, ``env.violation`` for refusals)."""
    if name in PLAIN:
        # containers among the members (hashlib.algorithms_available) are copied: the library's are shared
        members = {k: type(v)(v) if type(v) in (set, list, dict) else v for k, v in _plain_members(name).items()}
    elif name in WRAPPED:
        builder: Callable[[Any], dict[str, Any]] = importlib.import_module(WRAPPED[name]).build
        members = builder(env)
        freeze_classes(members)
    else:
        raise KeyError(name)
    module = types.ModuleType(name)
    module.__dict__.update(members)
    return module
