"""Native feature operators: what feature scripts see as ``edge.ops``.

Every function converts its arguments once, up front, into values of exact types: numpy arrays
(a private view of an exact ``np.ndarray``, or a copy), ``int``/``float``, ``str``, and tuples
snapshotted from exact lists/tuples. Every length, count and stride passed to C is read from those
converted values, never from ``len()`` or iteration of a script's object, and no script code
(``__len__``, ``__iter__``, ``__index__``, ``__float__``, ``__array__``...) runs during a call.
Subclasses and look-alikes (a list subclass, an ndarray subclass, an object with ``__array__`` or
``__index__``) are refused with ``InputRefused`` (a ``BadInput`` and a ``TypeError``); other wrong
types raise ``TypeError``, wrong shapes, sizes, bounds or orders ``ValueError``, each naming the
argument. Numpy buffers go to C without copying (``ffi.from_buffer``) when they are C-contiguous,
aligned, in native byte order and of the op's dtype (others are copied first); outputs are freshly
allocated arrays. The C code releases the GIL, keeps no global state and checks every index it uses
when it uses it, so nothing a script passes, or changes from another thread meanwhile, can make it
read or write out of bounds. Sizes are capped at ``MAX_ELEMENTS`` (2**28) elements per input,
output and work buffer. No cffi object is reachable from what a script gets: a ``Vocab``'s table
lives in this module's private registry, not on the object. The exact definitions are in
docs/native-ops.md.
"""

from __future__ import annotations

import math
import sys
import weakref

import numpy as np

from vm.errors import BadInput

try:
    from vm.ml._ops import ffi as _ffi
    from vm.ml._ops import lib as _lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError("vm.ml._ops is not built: run `python build.py` from the repository root") from exc

__all__ = [
    "MAX_ELEMENTS",
    "Vocab",
    "bucketize",
    "clip",
    "decayed_count",
    "hash_ids",
    "hash_strings",
    "image_preprocess",
    "log1p",
    "minmax_scale",
    "multi_hot",
    "murmur3_32",
    "one_hot",
    "tokenize",
    "top_k",
    "vocab_lookup",
    "window_agg",
    "window_agg_grouped",
    "zscore",
]

MAX_ELEMENTS: int = _lib.OPS_MAX_ELEMENTS

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_I32 = np.dtype(np.int32)
_I64 = np.dtype(np.int64)
_U32 = np.dtype(np.uint32)
_U64 = np.dtype(np.uint64)
_NDARRAY = np.ndarray
_fb = _ffi.from_buffer
_NULL = _ffi.NULL
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# ---------------------------------------------------------------------------------------------
# validation helpers (kept cheap: they run on every call)


class InputRefused(BadInput, TypeError):
    """An argument that only looks like what an op accepts: a subclass (of list, tuple, dict,
    ndarray, int, float...) or an object with ``__array__``, ``__index__``, ``__len__``... The ops
    accept exact types only, so that no script code runs inside them and no length comes from a
    script's object. Also a ``TypeError``, so ``except TypeError`` keeps working in scripts."""


def _type_name(x: object) -> str:
    """The name of ``x``'s type for a message (an exact str: a script's str subclass never reaches one)."""
    name = type(x).__name__
    return name if type(name) is str else "object"


_BASES = (list, tuple, dict, str, bytes, int, float, complex, np.generic, _NDARRAY)
_PLAIN = frozenset({*_BASES, bool, *np.sctypeDict.values()})  # the builtin and numpy types themselves


def _subclass(x: object) -> bool:
    """``x`` is of a subclass (a script's, say) of a builtin or numpy type."""
    t = type(x)
    return t not in _PLAIN and issubclass(t, _BASES)


def _refused(name: str, x: object, want: str) -> InputRefused:
    kind = "a subclass " if _subclass(x) else "a look-alike "
    return InputRefused(f"{name} must be {want}, got {kind}{_type_name(x)} (exact types only)")


# What a look-alike defines: sequence, number and array protocols (checked on its type, never called).
_PROTOCOLS = ("__len__", "__iter__", "__getitem__", "__index__", "__int__", "__float__", "__array__",
              "__array_interface__", "__array_struct__", "__buffer__", "keys")


def _looks_like(x: object) -> bool:
    """A subclass of a builtin or numpy type, or an object of a class with a sequence, number or
    array protocol: refused as an impostor (InputRefused), not as a plain wrong type."""
    t = type(x)
    return t not in _PLAIN and (issubclass(t, _BASES) or any(hasattr(t, d) for d in _PROTOCOLS))


def _masked(x: object) -> bool:
    """``x`` is a numpy masked array. Looked up only if numpy.ma was imported (no masked array can
    exist before), so that loading the ops does not import numpy.ma (~10 ms of cold start)."""
    ma = sys.modules.get("numpy.ma")
    return ma is not None and issubclass(type(x), ma.MaskedArray)


def _array(x, name: str) -> np.ndarray:
    """A private view of an exact ndarray: its shape, strides and dtype cannot be changed during
    the call by whoever holds ``x`` (the data is shared; the C code re-checks what it reads)."""
    if type(x) is _NDARRAY:
        return x.view()
    if _masked(x):
        raise InputRefused(f"{name}: masked arrays are not supported (use .filled() first)")
    if issubclass(type(x), _NDARRAY):
        raise InputRefused(f"{name} must be a numpy array, got the ndarray subclass {_type_name(x)} "
                           "(use np.asarray(x) first)")
    if _looks_like(x):
        raise _refused(name, x, "a numpy array")
    raise TypeError(f"{name} must be a numpy array, got {_type_name(x)}")


def _items(x, name: str, want: str) -> tuple:
    """The elements of an exact list or tuple, snapshotted (a tuple: it cannot change meanwhile)."""
    t = type(x)
    if t is tuple:
        return x
    if t is list:
        return tuple(x)
    if _looks_like(x):
        raise _refused(name, x, want)
    raise TypeError(f"{name} must be {want}, got {_type_name(x)}")


def _reals(v, name: str) -> np.ndarray:
    """A list/tuple of real numbers -> float64 array (its length is the tuple's)."""
    items = _items(v, name, "a numpy array or a list/tuple of numbers")
    return np.array([_real(e, f"{name}[{i}]") for i, e in enumerate(items)], dtype=_F64)


def _ready(x: np.ndarray) -> np.ndarray:
    """C-contiguous, aligned and native byte order, copying only if it is not."""
    f = x.flags
    if f.c_contiguous and f.aligned and x.dtype.isnative:
        return x
    return np.array(x, dtype=np.dtype(x.dtype.newbyteorder("=").str), order="C", copy=True)


def _check_size(n: int, name: str) -> None:
    if n > MAX_ELEMENTS:
        raise ValueError(f"{name}: {n} elements exceed the limit of {MAX_ELEMENTS}")


def _float_array(x, name: str) -> np.ndarray:
    """float32 or float64, as is."""
    if type(x) is _NDARRAY and x.flags.carray and x.size <= MAX_ELEMENTS:  # the common case, fast
        dt = x.dtype
        if dt is _F64 or dt is _F32:
            x = x.view()
            if x.flags.carray:  # checked again on the private view: the script's may change meanwhile
                return x
    x = _array(x, name)
    dt = x.dtype
    if dt is _F64 or dt is _F32:
        f = x.flags
        if f.c_contiguous and f.aligned:
            _check_size(x.size, name)
            return x
    elif dt.kind != "f" or dt.itemsize not in (4, 8):
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {dt}")
    _check_size(x.size, name)
    return _ready(x)


def _f64_array(x, name: str) -> np.ndarray:
    """float64; other float and integer dtypes are converted (a copy)."""
    x = _array(x, name)
    dt = x.dtype
    if dt is not _F64:
        if dt.kind not in "fiu":
            raise TypeError(f"{name} must be a real numeric array, got dtype {dt}")
        _check_size(x.size, name)
        return np.ascontiguousarray(x, dtype=_F64)
    _check_size(x.size, name)
    f = x.flags
    return x if f.c_contiguous and f.aligned else _ready(x)


def _i64_array(x, name: str) -> np.ndarray:
    """int64; other integer dtypes are converted (a copy); uint64 must fit in int64."""
    x = _array(x, name)
    dt = x.dtype
    if dt is not _I64:
        if dt.kind not in "iu":
            raise TypeError(f"{name} must be an integer array, got dtype {dt}")
        _check_size(x.size, name)
        if dt.kind == "u" and dt.itemsize == 8 and x.size and int(x.max()) > _INT64_MAX:
            raise ValueError(f"{name}: values above 2**63-1 do not fit int64")
        return np.ascontiguousarray(x, dtype=_I64)
    _check_size(x.size, name)
    f = x.flags
    return x if f.c_contiguous and f.aligned else _ready(x)


_INTEGERS = frozenset({int, *(np.dtype(c).type for c in "bBhHiIlLqQ")})
_REALS = _INTEGERS | {float, np.float16, np.float32, np.float64, np.longdouble}


def _int(v, name: str, lo: int, hi: int) -> int:
    """An exact int (or numpy integer scalar) in [lo, hi], as an int; bool is refused."""
    t = type(v)
    if t not in _INTEGERS:
        if t is bool or t is np.bool_:
            raise TypeError(f"{name} must be an integer, got bool")
        if _looks_like(v):
            raise _refused(name, v, "an int")
        raise TypeError(f"{name} must be an integer, got {_type_name(v)}")
    i = int(v)
    if not lo <= i <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {i}")
    return i


def _real(v, name: str) -> float:
    """An exact int or float (or numpy scalar of one), as a float; bool is refused."""
    t = type(v)
    if t not in _REALS:
        if t is not bool and t is not np.bool_ and _looks_like(v):
            raise _refused(name, v, "a real number")
        raise TypeError(f"{name} must be a real number, got {_type_name(v)}")
    return float(v)


def _one_d(x: np.ndarray, name: str) -> None:
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")


_ERRORS = {
    _lib.OPS_EINVAL: "invalid argument",
    _lib.OPS_EUNSORTED: "timestamps are not sorted",
    _lib.OPS_EKEY: "key out of range",
    _lib.OPS_EOFFSETS: "offsets are not valid",
    _lib.OPS_EBOUNDARIES: "boundaries are not strictly increasing",
    _lib.OPS_EUNICODE: "invalid code point",
    _lib.OPS_EDUPLICATE: "duplicate token",
    _lib.OPS_ESEPARATOR: "string buffer does not split",
    _lib.OPS_ETOOBIG: f"size over the limit of {MAX_ELEMENTS} elements",
}


def _fail(rc: int, op: str, detail: str = "") -> None:
    if rc == _lib.OPS_ENOMEM:
        raise MemoryError(f"{op}: out of memory")
    msg = _ERRORS.get(rc, f"native error {rc}")
    raise ValueError(f"{op}: {detail or msg}")


# ---------------------------------------------------------------------------------------------
# strings: one UTF-8 buffer. A list is joined with NUL separators (one C-speed join and encode);
# if a string itself holds a NUL the C side notices and we redo it with an explicit offsets array.


class _Strings:
    """A batch of strings converted once: a tuple of str (snapshotted from an exact list/tuple, or
    from a numpy object/StringDType array), or the UTF-8 buffer and offsets of a numpy 'U' array.
    ``n`` is the count every output is sized by and C is told."""

    __slots__ = ("seq", "ready", "n")

    def __init__(self, strings, name: str, *, as_str: bool = False) -> None:
        self.seq: tuple | None = None
        self.ready: tuple[bytes, np.ndarray] | None = None
        t = type(strings)
        if t is list or t is tuple:
            self.seq = _items(strings, name, "")
        elif t is _NDARRAY:
            strings = strings.view()
            if strings.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {strings.shape}")
            _check_size(strings.shape[0], name)
            kind = strings.dtype.kind
            if kind == "U" and not as_str:
                self.ready = _ucs4_buffer(strings, name)
            elif kind in "OTU":
                self.seq = tuple(strings.tolist())
            else:
                raise TypeError(f"{name} must hold str, got dtype {strings.dtype}")
        elif t is str or t is bytes:
            raise TypeError(f"{name} must be a list of str, not a single {t.__name__}")
        elif _looks_like(strings):
            raise _refused(name, strings, "a list/tuple of str or a numpy str array")
        else:
            raise TypeError(f"{name} must be a list/tuple of str or a numpy str array, got {_type_name(strings)}")
        self.n = len(self.seq) if self.seq is not None else len(self.ready[1]) - 1
        _check_size(self.n, name)


def _ucs4_buffer(arr: np.ndarray, name: str):
    n = arr.shape[0]
    _check_size(n, name)
    width = arr.dtype.itemsize // 4
    _check_size(n * width, name)  # before the copy _ready may make
    arr = _ready(arr)
    err = _ffi.new("int64_t *")
    src = _fb(arr)
    size = _lib.ops_ucs4_utf8_size(src, n, width, err)
    if size < 0:
        raise ValueError(f"{name}[{err[0]}] holds a surrogate or invalid code point")
    buf = np.empty(size, np.uint8)
    offsets = np.empty(n + 1, _I64)
    rc = _lib.ops_ucs4_to_utf8(src, n, width, _fb(buf), size, _fb(offsets))
    if rc:
        _fail(rc, name)
    return buf.tobytes(), offsets


def _nul_joined(strings: tuple, name: str, lower: bool = False, first: int = 0) -> bytes:
    try:
        joined = "\0".join(strings)  # reads each str's own data: no method of a str subclass runs
    except TypeError:
        bad = next(i for i, s in enumerate(strings) if not issubclass(type(s), str))
        raise TypeError(f"{name}[{first + bad}] must be str, got {_type_name(strings[bad])}") from None
    if lower and not joined.isascii():  # ASCII is lowered in C; str.lower() does full Unicode
        joined = joined.lower()
    return joined.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)


def _with_offsets(strings: tuple, lower: bool = False):
    # str.lower/str.encode, not s.lower(): a str subclass's own methods never run
    enc = [str.encode(str.lower(s) if lower else s, "utf-8") for s in strings]
    offsets = np.zeros(len(enc) + 1, _I64)
    np.cumsum(np.fromiter(map(len, enc), _I64, len(enc)), out=offsets[1:])
    return b"".join(enc), offsets


# Long lists go to C in chunks: the joined text of a chunk stays in cache, and the allocator keeps
# reusing the same memory instead of mapping (and page-faulting) two fresh copies of everything.
_CHUNK = 1 << 15


def _call_strings(fn, strings: _Strings, name: str, args_for, *, lower: bool = False) -> None:
    """fn(buf, len, offsets, count, *args_for(start, stop)) over the strings, in chunks; every count
    comes from the converted batch (a chunk of the tuple, or the offsets array)."""
    if strings.ready is not None:
        buf, offsets = strings.ready
        n = len(offsets) - 1
        rc = fn(buf, len(buf), _fb(offsets), n, *args_for(0, n))
        if rc:
            _fail(rc, name)
        return
    seq, n = strings.seq, strings.n
    for start in range(0, n, _CHUNK):
        part = seq if n <= _CHUNK else seq[start:start + _CHUNK]
        stop = start + len(part)
        buf = _nul_joined(part, name, lower, start)
        args = args_for(start, stop)
        rc = fn(buf, len(buf), _NULL, len(part), *args)
        if rc == _lib.OPS_ESEPARATOR:  # some string contains a NUL
            buf, offsets = _with_offsets(part, lower)
            rc = fn(buf, len(buf), _fb(offsets), len(offsets) - 1, *args)
        if rc:
            _fail(rc, name)


# ---------------------------------------------------------------------------------------------
# 1-2. hashing


def _buckets(num_buckets) -> int:
    return _int(num_buckets, "num_buckets", 1, _INT64_MAX)


def _seed32(seed) -> int:
    return _int(seed, "seed", 0, 2**32 - 1)


def murmur3_32(strings, seed: int = 0) -> np.ndarray:
    """MurmurHash3 x86_32 of each string's UTF-8 bytes, as uint32 (== mmh3.hash(s, seed, signed=False))."""
    seed = _seed32(seed)
    strings = _Strings(strings, "strings")
    out = np.empty(strings.n, _U32)
    _call_strings(_lib.ops_murmur3_strings, strings, "strings", lambda i, j: (seed, _fb(out[i:j])))
    return out


def hash_strings(strings, num_buckets: int, seed: int = 0) -> np.ndarray:
    """murmur3_32(s, seed) % num_buckets for each string, as int64."""
    nb = _buckets(num_buckets)
    seed = _seed32(seed)
    strings = _Strings(strings, "strings")
    out = np.empty(strings.n, _I64)
    _call_strings(_lib.ops_hash_strings, strings, "strings", lambda i, j: (seed, nb, _fb(out[i:j])))
    return out


def _ids_for_hash(ids) -> np.ndarray:
    ids = _array(ids, "ids")
    _check_size(ids.size, "ids")  # before any copy
    dt = ids.dtype
    if dt is _I64:
        f = ids.flags
        if not (f.c_contiguous and f.aligned):
            ids = _ready(ids)
    elif dt.kind == "u" and dt.itemsize == 8:  # the same 8 bytes as the int64 view
        ids = _ready(ids).view(_I64)
    elif dt.kind in "iu":
        ids = np.ascontiguousarray(ids, dtype=_I64)
    else:
        raise TypeError(f"ids must be an integer array, got dtype {dt}")
    return ids


def hash_ids(ids, num_buckets: int, seed: int = 0, *, algorithm: str = "murmur3") -> np.ndarray:
    """Hash of the 8 little-endian bytes of each int64 id, modulo num_buckets, as int64 (any shape).

    algorithm "murmur3": mmh3.hash(id.to_bytes(8, 'little', signed=True), seed, signed=False);
    "xxh64": xxhash.xxh64_intdigest(<same bytes>, seed) (seed in [0, 2**64)).
    """
    ids = _ids_for_hash(ids)
    nb = _buckets(num_buckets)
    out = np.empty(ids.shape, _I64)
    if type(algorithm) is not str:  # never compared: a script's __eq__ would run
        if _subclass(algorithm):
            raise _refused("algorithm", algorithm, "'murmur3' or 'xxh64'")
        raise ValueError(f"algorithm must be 'murmur3' or 'xxh64', got a {_type_name(algorithm)}")
    if algorithm == "murmur3":
        rc = _lib.ops_hash_ids(_fb(ids), ids.size, _seed32(seed), nb, _fb(out))
    elif algorithm == "xxh64":
        seed = _int(seed, "seed", 0, 2**64 - 1)
        rc = _lib.ops_xxh64_ids(_fb(ids), ids.size, seed, nb, _NULL, _fb(out))
    else:
        raise ValueError(f"algorithm must be 'murmur3' or 'xxh64', got {algorithm!r}")
    if rc:
        _fail(rc, "hash_ids")
    return out


# ---------------------------------------------------------------------------------------------
# 3. bucketize


def bucketize(values, boundaries) -> np.ndarray:
    """np.searchsorted(boundaries, values, side='right') as int64 (same shape as values); NaN -> len(boundaries)."""
    x = _float_array(values, "values")
    b = _f64_array(boundaries, "boundaries") if type(boundaries) is _NDARRAY else _reals(boundaries, "boundaries")
    _one_d(b, "boundaries")
    out = np.empty(x.shape, _I64)
    fn = _lib.ops_bucketize_f64 if x.itemsize == 8 else _lib.ops_bucketize_f32
    rc = fn(_fb(x), x.size, _fb(b), b.size, _fb(out), _NULL)
    if rc:
        if rc == _lib.OPS_EBOUNDARIES:
            err = _ffi.new("int64_t *")
            fn(_fb(x), 0, _fb(b), b.size, _fb(out), err)
            i = err[0]
            raise ValueError(
                f"boundaries must be strictly increasing and not NaN (see boundaries[{i}] = {b[i]!r})"
            )
        _fail(rc, "bucketize")
    return out


# ---------------------------------------------------------------------------------------------
# 4. elementwise


def _columns(x: np.ndarray, op: str) -> int:
    if x.ndim == 1:
        return 1
    if x.ndim == 2:
        return x.shape[1]
    raise ValueError(f"{op}: x must have shape (n,) or (n, d), got {x.shape}")


def _param(v, name: str, d: int, x: np.ndarray):
    """-> (array or NULL, scalar, keep-alive)."""
    t = type(v)
    if (t is _NDARRAY and v.ndim > 0) or t is list or t is tuple:
        a = _f64_array(v, name) if t is _NDARRAY else _reals(v, name)
        if a.ndim != 1 or a.shape[0] != d or x.ndim != 2:
            want = f"shape ({d},) for x of shape {x.shape}" if x.ndim == 2 else "a scalar for 1-D x"
            raise ValueError(f"{name} must be {want}, got shape {a.shape}")
        return _fb(a), 0.0, a
    return _NULL, _real(v, name), None


def _affine(kind: int, op: str, x, p, q, pname: str, qname: str) -> np.ndarray:
    x = _float_array(x, "x")
    d = _columns(x, op)
    pp, ps, _pk = _param(p, pname, d, x)
    qp, qs, _qk = _param(q, qname, d, x)
    out = np.empty(x.shape, x.dtype)
    n = x.shape[0]
    fn = _lib.ops_affine_f64 if x.itemsize == 8 else _lib.ops_affine_f32
    rc = fn(_fb(x), n, d, kind, pp, ps, qp, qs, _fb(out)) if d > 0 and n > 0 else 0
    if rc:
        _fail(rc, op)
    return out


def minmax_scale(x, lo, hi) -> np.ndarray:
    """(x - lo) / (hi - lo); 0 where hi == lo (NaN stays NaN). lo/hi: scalars or per-column (d,) arrays."""
    return _affine(0, "minmax_scale", x, lo, hi, "lo", "hi")


def zscore(x, mean, std) -> np.ndarray:
    """(x - mean) / std; 0 where std == 0 (NaN stays NaN). mean/std: scalars or per-column (d,) arrays."""
    return _affine(1, "zscore", x, mean, std, "mean", "std")


def clip(x, lo, hi) -> np.ndarray:
    """min(max(x, lo), hi), NaN propagates; lo <= hi required (per column). float32 data uses float32 bounds."""
    x = _float_array(x, "x")
    d = _columns(x, "clip")
    lp, ls, _lk = _param(lo, "lo", d, x)
    hp, hs, _hk = _param(hi, "hi", d, x)
    out = np.empty(x.shape, x.dtype)
    fn = _lib.ops_clip_f64 if x.itemsize == 8 else _lib.ops_clip_f32
    if d == 0:
        return out
    rc = fn(_fb(x), x.shape[0], d, lp, ls, hp, hs, _fb(out), _NULL)
    if rc:
        if rc == _lib.OPS_EINVAL:
            err = _ffi.new("int64_t *")
            fn(_fb(x), 0, d, lp, ls, hp, hs, _fb(out), err)
            where = f" (column {err[0]})" if lp != _NULL or hp != _NULL else ""
            raise ValueError(f"clip: lo must be <= hi and neither may be NaN{where}")
        _fail(rc, "clip")
    return out


_log1p_f64, _log1p_f32 = _lib.ops_log1p_f64, _lib.ops_log1p_f32
_empty_like = np.empty_like


def log1p(x) -> np.ndarray:
    """log(1 + x) elementwise (any shape); -1 -> -inf, < -1 -> NaN, like numpy."""
    # the checks of _float_array inlined: at 10k elements the wrapper is a third of the time
    if type(x) is not _NDARRAY or not x.flags.carray or x.size > MAX_ELEMENTS:
        x = _float_array(x, "x")
    else:
        x = x.view()  # private metadata, as _array gives (checked again on the view)
        dt = x.dtype
        if (dt is not _F64 and dt is not _F32) or not x.flags.carray:
            x = _float_array(x, "x")
    out = _empty_like(x)
    if (_log1p_f64 if x.itemsize == 8 else _log1p_f32)(_fb(x), x.size, _fb(out)):
        _fail(_lib.OPS_EINVAL, "log1p")
    return out


# ---------------------------------------------------------------------------------------------
# 5. one-hot / multi-hot


def one_hot(ids, depth: int) -> np.ndarray:
    """(n,) integer ids -> float32 (n, depth); ids outside [0, depth) give an all-zero row."""
    ids = _array(ids, "ids")
    _one_d(ids, "ids")
    _check_size(ids.size, "ids")  # before any copy
    depth = _int(depth, "depth", 0, MAX_ELEMENTS)
    n = ids.shape[0]
    if n and depth and n > MAX_ELEMENTS // depth:
        raise ValueError(f"one_hot: output ({n}, {depth}) exceeds the limit of {MAX_ELEMENTS} elements")
    dt = ids.dtype
    if dt is _I32:
        ids = _ready(ids)
        fn = _lib.ops_one_hot_i32
    else:
        if dt.kind == "u" and dt.itemsize == 8:  # huge values are out of range anyway
            ids = np.minimum(ids, np.uint64(_INT64_MAX))
        ids = _i64_array(ids, "ids")
        fn = _lib.ops_one_hot_i64
    out = np.zeros((n, depth), _F32)
    rc = fn(_fb(ids), n, depth, _fb(out))
    if rc:
        _fail(rc, "one_hot")
    return out


def multi_hot(offsets, ids, depth: int) -> np.ndarray:
    """CSR rows: row i has a 1 at every id in ids[offsets[i]:offsets[i+1]] that lies in [0, depth)."""
    offsets = _i64_array(offsets, "offsets")
    ids = _i64_array(ids, "ids")
    _one_d(offsets, "offsets")
    _one_d(ids, "ids")
    if offsets.shape[0] < 1:
        raise ValueError("offsets must have n + 1 >= 1 entries")
    depth = _int(depth, "depth", 0, MAX_ELEMENTS)
    n = offsets.shape[0] - 1
    if n and depth and n > MAX_ELEMENTS // depth:
        raise ValueError(f"multi_hot: output ({n}, {depth}) exceeds the limit of {MAX_ELEMENTS} elements")
    out = np.zeros((n, depth), _F32)
    rc = _lib.ops_multi_hot(_fb(offsets), n, _fb(ids), ids.shape[0], depth, _fb(out), _NULL)
    if rc:
        if rc == _lib.OPS_EOFFSETS:
            i = int(
                np.flatnonzero((offsets < 0) | (offsets > ids.shape[0]) | np.r_[False, np.diff(offsets) < 0])[
                    0
                ]
            )
            raise ValueError(
                f"offsets must be non-decreasing and within [0, len(ids)={ids.shape[0]}] "
                f"(offsets[{i}] = {offsets[i]})"
            )
        _fail(rc, "multi_hot")
    return out


# ---------------------------------------------------------------------------------------------
# 6. vocabulary


# A Vocab's C table, size and oov id live here, not on the object: a script holding a Vocab can
# reach nothing but its methods (no attribute of it is a cffi object, whatever the name policy).
# The entry, and with it the table (ffi.gc), goes when the Vocab is garbage-collected.
_VOCABS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _vocab_state(v: Vocab) -> tuple:
    """(table, size, oov_id) of a Vocab (a module function: nothing on the object leads here)."""
    state = _VOCABS.get(v)
    if state is None:  # not a Vocab built by Vocab(tokens); AttributeError as a missing table was before
        raise AttributeError("this Vocab was never built (create it with Vocab(tokens))")
    return state


class Vocab:
    """A string -> id table built once in C (freed when the Vocab is garbage-collected).

    ``tokens`` is a list/tuple of distinct str (token i gets id ``offset + i``; by default 1, 2, ...,
    leaving 0 for out-of-vocabulary) or a dict {str: int} of explicit ids. Unknown strings map to
    ``oov_id``. Duplicate tokens are a ValueError. The object is opaque (no attributes; its table is
    kept by the runtime) and final (a subclass is a TypeError).
    """

    __slots__ = ("__weakref__",)

    def __init_subclass__(cls, **kwargs: object) -> None:
        raise TypeError("edge.ops.Vocab cannot be subclassed")

    def __init__(self, tokens, oov_id: int = 0, offset: int = 1) -> None:
        oov_id = _int(oov_id, "oov_id", _INT64_MIN, _INT64_MAX)
        if type(tokens) is dict:
            pairs = tuple(tokens.items())  # a snapshot: keys and ids have one length
            keys = tuple(k for k, _ in pairs)
            ids = np.array([_int(v, f"the id of tokens' key #{i}", _INT64_MIN, _INT64_MAX) for i, (_, v) in enumerate(pairs)], _I64)
        elif type(tokens) is list or type(tokens) is tuple:
            keys = _items(tokens, "tokens", "")
            offset = _int(offset, "offset", _INT64_MIN, _INT64_MAX)
            if len(keys) and not _INT64_MIN <= offset + len(keys) - 1 <= _INT64_MAX:
                raise ValueError("offset + len(tokens) - 1 does not fit int64")
            ids = np.arange(offset, offset + len(keys), dtype=_I64)
        elif _looks_like(tokens):
            raise _refused("tokens", tokens, "a list/tuple of str or a dict str -> int")
        else:
            raise TypeError(
                f"tokens must be a list/tuple of str or a dict str -> int, got {_type_name(tokens)}"
            )
        n = ids.shape[0]
        _check_size(n, "tokens")
        buf = _nul_joined(keys, "tokens")
        status = _ffi.new("int *")
        err = _ffi.new("int64_t *")
        table = _lib.ops_vocab_new(buf, len(buf), _NULL, n, _fb(ids), status, err)
        if status[0] == _lib.OPS_ESEPARATOR:
            buf, offsets = _with_offsets(keys)
            table = _lib.ops_vocab_new(buf, len(buf), _fb(offsets), n, _fb(ids), status, err)
        if table == _NULL:
            if status[0] == _lib.OPS_EDUPLICATE:
                i = err[0]
                raise ValueError(f"tokens: duplicate token {str.__repr__(keys[i])} at position {i}")
            _fail(status[0], "Vocab")
        _VOCABS[self] = (_ffi.gc(table, _lib.ops_vocab_free, size=len(buf) + 48 * n), n, oov_id)

    def __len__(self) -> int:
        return _vocab_state(self)[1]

    def __copy__(self) -> Vocab:
        return self  # immutable: a copy is the same table

    def __deepcopy__(self, memo: dict) -> Vocab:
        return self

    @property
    def oov_id(self) -> int:
        """The id of strings that are not in the vocabulary."""
        return _vocab_state(self)[2]

    def __repr__(self) -> str:
        _, n, oov = _vocab_state(self)
        return f"Vocab(<{n} tokens>, oov_id={oov})"

    def lookup(self, strings) -> np.ndarray:
        """id of each string (oov_id when absent), as int64."""
        table, _, oov = _vocab_state(self)
        strings = _Strings(strings, "strings")
        out = np.empty(strings.n, _I64)
        _call_strings(
            lambda buf, ln, off, n, *a: _lib.ops_vocab_lookup(table, buf, ln, off, n, *a),
            strings,
            "strings",
            lambda i, j: (oov, _fb(out[i:j])),
        )
        return out


def vocab_lookup(strings, vocab: Vocab) -> np.ndarray:
    """Same as ``vocab.lookup(strings)``."""
    if type(vocab) is not Vocab:
        raise TypeError(f"vocab must be a Vocab, got {_type_name(vocab)}")
    return vocab.lookup(strings)


# ---------------------------------------------------------------------------------------------
# 7. event windows


def _windows(windows) -> np.ndarray:
    if type(windows) is _NDARRAY:
        w = _i64_array(windows, "windows")
    else:
        items = _items(windows, "windows", "a numpy array or a list/tuple of int")
        w = np.array([_int(v, f"windows[{i}]", 0, _INT64_MAX) for i, v in enumerate(items)], dtype=_I64)
    _one_d(w, "windows")
    if w.size and int(w.min()) < 0:
        raise ValueError(f"windows must be >= 0, got {int(w.min())}")
    return w


def _events(timestamps, values):
    ts = _i64_array(timestamps, "timestamps")
    _one_d(ts, "timestamps")
    if values is None:
        return ts, None
    v = _f64_array(values, "values")
    _one_d(v, "values")
    if v.shape[0] != ts.shape[0]:
        raise ValueError(f"values has {v.shape[0]} entries, timestamps {ts.shape[0]}")
    return ts, v


def _window_fail(rc: int, op: str, ts: np.ndarray, keys=None, num_groups=None) -> None:
    if rc == _lib.OPS_EUNSORTED:
        i = int(np.flatnonzero(ts[1:] < ts[:-1])[0]) + 1
        raise ValueError(f"{op}: timestamps must be non-decreasing (timestamps[{i}] < timestamps[{i - 1}])")
    if rc == _lib.OPS_EKEY:
        i = int(np.flatnonzero((keys < 0) | (keys >= num_groups))[0])
        raise ValueError(f"{op}: keys must be in [0, num_groups={num_groups}) (keys[{i}] = {keys[i]})")
    _fail(rc, op)


def window_agg(timestamps, values, now: int, windows) -> np.ndarray:
    """float64 (len(windows), 6): count, sum, mean, min, max, last over events with now - w < t <= now."""
    ts, v = _events(timestamps, values)
    now = _int(now, "now", _INT64_MIN, _INT64_MAX)
    w = _windows(windows)
    out = np.empty((w.shape[0], 6), _F64)
    rc = _lib.ops_window_agg(_fb(ts), _fb(v), ts.shape[0], now, _fb(w), w.shape[0], _fb(out), _NULL)
    if rc:
        _window_fail(rc, "window_agg", ts)
    return out


def window_agg_grouped(keys, timestamps, values, now: int, windows, num_groups: int) -> np.ndarray:
    """float64 (num_groups, len(windows), 6): window_agg per key in [0, num_groups)."""
    ts, v = _events(timestamps, values)
    k = _i64_array(keys, "keys")
    _one_d(k, "keys")
    if k.shape[0] != ts.shape[0]:
        raise ValueError(f"keys has {k.shape[0]} entries, timestamps {ts.shape[0]}")
    now = _int(now, "now", _INT64_MIN, _INT64_MAX)
    w = _windows(windows)
    g = _int(num_groups, "num_groups", 0, MAX_ELEMENTS)
    if g * max(w.shape[0], 1) * 6 > MAX_ELEMENTS:
        raise ValueError(f"window_agg_grouped: output ({g}, {w.shape[0]}, 6) exceeds {MAX_ELEMENTS} elements")
    out = np.empty((g, w.shape[0], 6), _F64)
    rc = _lib.ops_window_agg_grouped(
        _fb(k), _fb(ts), _fb(v), ts.shape[0], now, _fb(w), w.shape[0], g, _fb(out), _NULL
    )
    if rc:
        _window_fail(rc, "window_agg_grouped", ts, k, g)
    return out


def decayed_count(timestamps, now: int, half_life, keys=None, num_groups=None, weights=None):
    """sum of w * 0.5 ** ((now - t) / half_life) over events with t <= now (any order).

    Returns a float, or with ``keys`` (ints in [0, num_groups)) a float64 (num_groups,) array.
    """
    ts, wts = _events(timestamps, weights)
    now = _int(now, "now", _INT64_MIN, _INT64_MAX)
    hl = _real(half_life, "half_life")
    if not (hl > 0 and math.isfinite(hl) and math.isfinite(1.0 / hl)):
        raise ValueError(f"half_life must be a finite number > 0, got {hl!r}")
    wp = _NULL if wts is None else _fb(wts)
    if keys is None:
        if num_groups is not None:
            raise ValueError("num_groups is only meaningful with keys")
        out = np.empty(1, _F64)
        rc = _lib.ops_decayed_count(_fb(ts), wp, _NULL, ts.shape[0], now, hl, 0, _fb(out), _NULL)
        if rc:
            _fail(rc, "decayed_count")
        return float(out[0])
    if num_groups is None:
        raise ValueError("decayed_count: keys need num_groups")
    k = _i64_array(keys, "keys")
    _one_d(k, "keys")
    if k.shape[0] != ts.shape[0]:
        raise ValueError(f"keys has {k.shape[0]} entries, timestamps {ts.shape[0]}")
    g = _int(num_groups, "num_groups", 0, MAX_ELEMENTS)
    out = np.empty(g, _F64)
    rc = _lib.ops_decayed_count(_fb(ts), wp, _fb(k), ts.shape[0], now, hl, g, _fb(out), _NULL)
    if rc:
        _window_fail(rc, "decayed_count", ts, k, g)
    return out


# ---------------------------------------------------------------------------------------------
# 8-10. ranking, images, text


def top_k(scores, k: int):
    """(indices int64, values) of the k largest scores, descending; ties by lower index; NaN lowest."""
    x = _float_array(scores, "scores")
    _one_d(x, "scores")
    k = _int(k, "k", 0, _INT64_MAX)
    k = min(k, x.shape[0])
    idx = np.empty(k, _I64)
    vals = np.empty(k, x.dtype)
    fn = _lib.ops_top_k_f64 if x.itemsize == 8 else _lib.ops_top_k_f32
    rc = fn(_fb(x), x.shape[0], k, _fb(idx), _fb(vals))
    if rc:
        _fail(rc, "top_k")
    return idx, vals


def _channel_params(v, name: str, c: int, default: float) -> np.ndarray:
    if v is None:
        return np.full(c, default, _F64)
    t = type(v)
    if t is _NDARRAY:
        a = _f64_array(v, name).reshape(-1)
    elif t is list or t is tuple:
        a = _reals(v, name)
    else:
        a = np.full(c, _real(v, name), _F64)
    if a.shape[0] != c:
        raise ValueError(f"{name} must have {c} value(s) for a {c}-channel image, got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {a.tolist()}")
    return a


def image_preprocess(img, out_h: int, out_w: int, mean=None, std=None) -> np.ndarray:
    """uint8 (H, W, 3) / (H, W, 1) / (H, W) -> float32 (C, out_h, out_w): bilinear resize (half-pixel
    centres), then (x / 255 - mean) / std per channel. mean/std default to 0 / 1."""
    img = _array(img, "img")
    if img.dtype != np.uint8:
        raise TypeError(f"img must be a uint8 array, got dtype {img.dtype}")
    if img.ndim == 2:
        h, w = img.shape
        c = 1
    elif img.ndim == 3 and img.shape[2] in (1, 3):
        h, w, c = img.shape
    else:
        raise ValueError(f"img must have shape (H, W, 3), (H, W, 1) or (H, W), got {img.shape}")
    if h < 1 or w < 1:
        raise ValueError(f"img must not be empty, got shape {img.shape}")
    _check_size(img.size, "img")
    out_h = _int(out_h, "out_h", 1, MAX_ELEMENTS)
    out_w = _int(out_w, "out_w", 1, MAX_ELEMENTS)
    if out_h * out_w * c > MAX_ELEMENTS:
        raise ValueError(f"image_preprocess: output ({c}, {out_h}, {out_w}) exceeds {MAX_ELEMENTS} elements")
    m = _channel_params(mean, "mean", c, 0.0)
    s = _channel_params(std, "std", c, 1.0)
    if np.any(s == 0):
        raise ValueError("std must not be 0")
    f = img.flags
    if not f.c_contiguous:
        img = np.ascontiguousarray(img)
    out = np.empty((c, out_h, out_w), _F32)
    rc = _lib.ops_image_preprocess(_fb(img), h, w, c, out_h, out_w, _fb(m), _fb(s), _fb(out))
    if rc:
        _fail(rc, "image_preprocess")
    return out


def tokenize(
    texts, num_buckets: int, ngrams=(1, 2), max_tokens: int = 32, seed: int = 0, *, pad_id: int = -1
):
    """Hashed word n-grams: -> (ids int64 (n, max_tokens) padded with pad_id, lengths int64 (n,)).

    Lowercase (Unicode), split on separators (ASCII non-alphanumerics and the punctuation/space blocks
    listed in docs/native-ops.md), and for each word position i, for each n in ngrams (in order), the
    n-gram of words i..i+n-1 joined by one space, hashed murmur3_32(seed) % num_buckets; the first
    max_tokens of these are kept.
    """
    nb = _buckets(num_buckets)
    seed = _seed32(seed)
    max_tokens = _int(max_tokens, "max_tokens", 1, MAX_ELEMENTS)
    pad_id = _int(pad_id, "pad_id", _INT64_MIN, _INT64_MAX)
    ng = [_int(g, f"ngrams[{i}]", 1, 16) for i, g in enumerate(_items(ngrams, "ngrams", "a list/tuple of int"))]
    if not ng:
        raise TypeError("ngrams must be a non-empty list/tuple of int, got an empty one")
    if len(set(ng)) != len(ng):
        raise ValueError(f"ngrams must not repeat, got {ng}")
    texts = _Strings(texts, "texts", as_str=True)  # as str: the Unicode lowering needs str objects
    n = texts.n
    if n and n > MAX_ELEMENTS // max_tokens:
        raise ValueError(f"tokenize: output ({n}, {max_tokens}) exceeds {MAX_ELEMENTS} elements")
    ngarr = np.array(ng, dtype=_I32)
    ids = np.empty((n, max_tokens), _I64)
    lengths = np.empty(n, _I64)
    ngp = _fb(ngarr)
    _call_strings(
        _lib.ops_tokenize,
        texts,
        "texts",
        lambda i, j: (ngp, ngarr.shape[0], max_tokens, seed, nb, pad_id, _fb(ids[i:j]), _fb(lengths[i:j])),
        lower=True,
    )
    return ids, lengths
