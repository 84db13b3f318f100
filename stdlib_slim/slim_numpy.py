"""``numpy`` for scripts: array construction, arithmetic, reductions, sorting and a little linear
algebra. Left out on purpose: everything that touches files or raw memory (``load``, ``save``,
``fromfile``, ``memmap``, ``frombuffer``, ``ctypeslib``, ``lib.stride_tricks``), process-wide state
(``seterr``, ``set_printoptions``, the legacy global ``random``), uninitialised memory (``empty``),
and the submodules as a whole. Array data allocated by scripts counts against the call's memory
budget and is zeroed (``vm.guard._guard.numpy_install``).

Object arrays are refused: ``numpy.dtype`` refuses object dtypes and the constructors in
``_CONSTRUCTORS`` refuse to return arrays that hold Python objects (the comparison callbacks of
sort, argmax and partition on such arrays are a use-after-free door: a script's ``__lt__`` that
assigns into the array frees the element being compared). ``finfo``/``iinfo`` hand out copies of
numpy's process-wide cached instances (numpy itself reads ``finfo(...).eps``)."""
from __future__ import annotations

import types
from typing import Any

import numpy as np

from vm.guard import _guard

_NAMES = (
    # construction and conversion
    "array", "asarray", "ascontiguousarray", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "arange", "linspace", "logspace", "eye", "identity", "diag", "meshgrid", "copy",
    # shape
    "reshape", "ravel", "transpose", "swapaxes", "moveaxis", "expand_dims", "squeeze", "concatenate",
    "stack", "hstack", "vstack", "column_stack", "split", "array_split", "tile", "repeat", "flip",
    "roll", "pad", "atleast_1d", "atleast_2d", "broadcast_to", "take", "take_along_axis", "put",
    "where", "nonzero", "flatnonzero", "argwhere", "select", "choose", "compress", "extract", "insert",
    "delete", "append", "unique", "isin", "searchsorted", "digitize", "histogram", "bincount",
    # math
    "abs", "absolute", "add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "mod",
    "remainder", "power", "sqrt", "square", "exp", "expm1", "exp2", "log", "log1p", "log2", "log10",
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "sign",
    "floor", "ceil", "round", "rint", "trunc", "clip", "minimum", "maximum", "fmin", "fmax", "hypot",
    "negative", "reciprocal", "dot", "vdot", "matmul", "inner", "outer", "cross", "einsum", "kron",
    "cumsum", "cumprod", "diff", "gradient", "interp", "convolve", "isnan", "isinf", "isfinite",
    "nan_to_num", "logical_and", "logical_or", "logical_not", "logical_xor", "equal", "not_equal",
    "less", "less_equal", "greater", "greater_equal", "allclose", "isclose", "array_equal",
    # reductions and order statistics
    "sum", "prod", "mean", "average", "median", "std", "var", "min", "max", "amin", "amax", "argmin",
    "argmax", "ptp", "percentile", "quantile", "nansum", "nanmean", "nanmedian", "nanstd", "nanvar",
    "nanmin", "nanmax", "nanargmin", "nanargmax", "nanpercentile", "nanquantile", "any", "all",
    "count_nonzero", "corrcoef", "cov", "sort", "argsort", "lexsort", "partition", "argpartition",
    "cumulative_sum", "trace", "tril", "triu",
    # types and constants ("ndarray", "dtype", "finfo" and "iinfo" are built below)
    "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
    "uint16", "uint32", "uint64", "bool_", "complex64", "complex128", "str_", "bytes_", "integer",
    "floating", "number", "generic", "nan", "inf", "pi", "e", "newaxis",
    "can_cast", "result_type", "promote_types", "issubdtype", "isscalar", "ndim", "shape", "size",
)
# What builds arrays from Python objects or takes a dtype: refused when the result holds objects.
_CONSTRUCTORS = (
    "array", "asarray", "ascontiguousarray", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "arange", "copy", "concatenate", "stack", "hstack", "vstack", "column_stack", "where",
    "select", "choose", "insert", "append", "tile", "repeat", "atleast_1d", "atleast_2d", "diag", "pad",
    "unique",
)
_LINALG = ("norm", "inv", "solve", "det", "svd", "eigh", "eigvalsh", "lstsq", "pinv", "qr", "cholesky",
           "matrix_rank", "matrix_power", "slogdet")


class _StandInMeta(type):
    """Stand-ins answer ``isinstance``/``issubclass`` for the numpy class they name (``_real``)."""

    _real: type

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._real)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return isinstance(sub, type) and issubclass(sub, cls._real)


class ndarray(metaclass=_StandInMeta):  # noqa: N801 - numpy's name
    """What scripts see as ``numpy.ndarray`` (also ``type(array)``): good for ``isinstance``, but
    not a constructor. ``numpy.ndarray(shape, dtype, buffer, offset)`` accepts a negative offset
    and object dtypes over raw bytes: build arrays with ``array``, ``zeros``, ``asarray``..."""

    _real = np.ndarray

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("numpy.ndarray(...) is not available in scripts: use numpy.array, zeros, ones, ...")


def _dtype_class(violation: Any) -> type:
    class dtype(metaclass=_StandInMeta):  # noqa: N801 - numpy's name
        """``numpy.dtype`` without object dtypes (``"O"``, ``object``, structured ones with object
        fields): object arrays are not available in scripts."""

        _real = np.dtype

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            made = np.dtype(*args, **kwargs)
            if made.hasobject:
                violation(f"numpy dtype {made} holds Python objects: object arrays are not available in scripts")
            return made

    return dtype


def _without_objects(fn: Any, violation: Any) -> Any:
    def checked(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if type(out) is np.ndarray and out.dtype.hasobject:
            violation(f"numpy.{fn.__name__}: arrays of Python objects (dtype {out.dtype}) are not available in scripts")
        return out

    checked.__name__ = fn.__name__
    checked.__doc__ = fn.__doc__
    return checked


def _copying(info: type) -> Any:
    def make(kind: Any) -> Any:
        shared = info(kind)  # numpy caches one instance per type for the whole process
        mine = object.__new__(info)
        vars(mine).update(vars(shared))
        return mine

    make.__name__ = make.__qualname__ = info.__name__
    make.__doc__ = info.__doc__
    return make


_finfo = _copying(np.finfo)
_iinfo = _copying(np.iinfo)


def build(env: Any) -> dict[str, Any]:
    _guard.numpy_install()
    members = {name: getattr(np, name) for name in _NAMES if hasattr(np, name)}
    members.update({name: _without_objects(members[name], env.violation) for name in _CONSTRUCTORS})
    members.update({"ndarray": ndarray, "dtype": _dtype_class(env.violation), "finfo": _finfo, "iinfo": _iinfo})
    linalg = types.ModuleType("numpy.linalg")
    linalg.__dict__.update({name: getattr(np.linalg, name) for name in _LINALG})
    linalg.__dict__["LinAlgError"] = np.linalg.LinAlgError
    rnd = types.ModuleType("numpy.random")
    rnd.__dict__.update({"default_rng": np.random.default_rng, "Generator": np.random.Generator})
    members.update({"linalg": linalg, "random": rnd, "__version__": np.__version__})
    return members
