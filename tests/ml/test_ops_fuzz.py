"""Fuzzing every native op (``edge.ops``) over adversarial inputs, with hypothesis.

Each op is described once (``CASES``): how to draw valid arguments, which of them are arrays, and a
pure-numpy/pure-Python reference (most from test_native_ops.py). The tests then check, for every op:

- valid values, including NaN/inf, extremes and empty inputs, in every memory layout (strided,
  negative strides, misaligned, byte-swapped, Fortran order, read-only) give the reference's result;
- look-alikes in any argument (list/tuple/dict/str/int/float/ndarray subclasses, objects with lying
  ``__len__``/``__iter__``/``__getitem__``/``__index__``/``__float__``, ``__array__`` and
  ``__array_interface__`` objects, masked arrays) are refused with ``InputRefused`` and *none of
  their code runs* (so none of it can mutate anything during the call);
- wrong dtypes and 0-d arrays give a TypeError/ValueError or a result of the right shape;
- sizes over the cap are refused before anything is allocated;
- arrays mutated by another thread while the op runs (values, and shape/dtype metadata) give a
  typed error or a result of the right shape, never a crash.

``EDGEVM_FUZZ_EXAMPLES`` sets the hypothesis examples per test (``make fuzz`` runs many, against a
-fsanitize=address,undefined build of the C code: tests/ml/fuzz_sanitized.py).
"""
from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import mmh3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_native_ops import (
    close,
    misaligned,
    ref_affine,
    ref_decayed,
    ref_grouped,
    ref_hash,
    ref_hash_ids,
    ref_image,
    ref_multi_hot,
    ref_one_hot,
    ref_tokenize,
    ref_top_k,
    ref_window,
    strided,
)

from vm.errors import BadInput
from vm.ml import ops

EXAMPLES = int(os.environ.get("EDGEVM_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
TYPED = (TypeError, ValueError)  # what bad input may raise (InputRefused is both BadInput and TypeError)

# ---------------------------------------------------------------------------------------------
# valid values

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
FINITE = st.floats(-1e6, 1e6)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
WORDS = st.text(alphabet="ab AB.,-\0é中—", max_size=16)


def _floats_as(values, dtype) -> np.ndarray:
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: one more edge
        return np.array(values, np.float64).astype(dtype)


SIZES = st.integers(0, 40)


def f_array(dtype, n=SIZES, elements=FLOATS):
    return n.flatmap(lambda k: st.lists(elements, min_size=k, max_size=k)).map(lambda v: _floats_as(v, dtype))


def sorted_ts(n):
    return st.lists(st.integers(-50, 200), min_size=n, max_size=n).map(lambda v: np.array(sorted(v), np.int64))


@dataclass(frozen=True)
class Case:
    """One op: ``draw`` gives (args, kwargs) with arrays C-contiguous; ``arrays`` names the positions
    (int index or kwarg name) holding numpy arrays; ``ref(args, kwargs)`` the expected result;
    ``check(actual, expected)`` compares (default: exactly, NaN equal)."""

    name: str
    fn: Callable
    draw: st.SearchStrategy
    arrays: tuple = ()
    ref: Callable | None = None
    check: Callable | None = None


def exact(actual, expected) -> None:
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            exact(a, e)
        return
    np.testing.assert_array_equal(actual, expected)


def near(rtol=1e-6, atol=1e-9):
    return lambda a, e: close(a, e, rtol=rtol, atol=atol)


def _strings_forms(texts):
    return st.sampled_from(["list", "tuple", "U", "O"]).map(
        lambda f: list(texts) if f == "list" else tuple(texts) if f == "tuple"
        else np.array(texts, dtype="U" if texts and f == "U" else object))


STRINGS = st.lists(TEXT, max_size=12).flatmap(_strings_forms)


def _bucketize_draw():
    bounds = st.lists(st.floats(allow_nan=False), max_size=12, unique_by=lambda f: f + 0.0).map(sorted)
    return st.tuples(st.sampled_from([np.float32, np.float64]).flatmap(f_array), bounds, st.booleans()).map(
        lambda t: ((t[0], np.array(t[1], np.float64) if t[2] else t[1]), {}))


def _ref_bucketize(args, kw):
    v, b = args
    return np.searchsorted(np.asarray(b, np.float64), v.astype(np.float64), side="right")


def _affine_draw():
    def build(n, d, dt, vals, p, q):
        x = _floats_as(vals, dt).reshape((n, d) if d else (n,))
        lo, hi = min(p, q), max(p, q)
        return (x, lo, hi), {}
    return st.tuples(st.integers(0, 12), st.integers(0, 4), st.sampled_from([np.float32, np.float64])).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]),
                            st.lists(FLOATS, min_size=t[0] * max(t[1], 1), max_size=t[0] * max(t[1], 1)),
                            FINITE, FINITE).map(lambda a: build(*a)))


def _ref_affine(minmax):
    def ref(args, kw):
        x, p, q = args
        with np.errstate(all="ignore"):
            return ref_affine(x, p, q, minmax).astype(x.dtype)
    return ref


def _ref_clip(args, kw):
    x, lo, hi = args
    return np.clip(x, x.dtype.type(lo), x.dtype.type(hi))


def _ref_log1p(args, kw):
    (x,) = args
    with np.errstate(all="ignore"):
        return np.log1p(x.astype(np.float64)).astype(x.dtype)


def _ids(dtypes=(np.int64, np.int32, np.int16, np.uint8, np.uint32), lo=-5, hi=40):
    return st.tuples(st.lists(st.integers(lo, hi), max_size=30), st.sampled_from(dtypes)).map(
        lambda t: np.array(t[0], np.int64).astype(t[1]) if t[1] not in (np.uint8, np.uint32)
        else np.abs(np.array(t[0], np.int64)).astype(t[1]))


def _multi_hot_draw():
    def build(ids, cuts, depth):
        cuts = sorted(min(c, len(ids)) for c in cuts)
        return (np.array(cuts, np.int64), np.array(ids, np.int64), depth), {}
    return st.tuples(st.lists(st.integers(-3, 20), max_size=30), st.lists(st.integers(0, 30), min_size=1, max_size=8),
                     st.integers(0, 20)).map(lambda t: build(*t))


def _window_draw(grouped):
    def build(n, ts, vals, keys, now, windows):
        v = np.array(vals, np.float64)
        if grouped:
            return (np.array(keys, np.int64), ts, v, now, windows, 4), {}
        return (ts, v, now, windows), {}
    return st.integers(0, 40).flatmap(lambda n: st.tuples(
        st.just(n), sorted_ts(n), st.lists(st.floats(-1e3, 1e3) | st.just(float("nan")), min_size=n, max_size=n),
        st.lists(st.integers(0, 3), min_size=n, max_size=n), st.integers(-60, 260),
        st.lists(st.integers(0, 300), min_size=1, max_size=4)).map(lambda a: build(*a)))


def _decayed_draw():
    def build(n, ts, w, keys, now, hl, grouped):
        ts = np.array(ts, np.int64)
        if grouped:
            return (ts, now, hl), {"keys": np.array(keys, np.int64), "num_groups": 5, "weights": np.array(w)}
        return (ts, now, hl), {"weights": np.array(w)}
    return st.integers(0, 40).flatmap(lambda n: st.tuples(
        st.just(n), st.lists(st.integers(-1000, 1000), min_size=n, max_size=n),
        st.lists(st.floats(-10, 10), min_size=n, max_size=n), st.lists(st.integers(0, 4), min_size=n, max_size=n),
        st.integers(-500, 1500), st.floats(0.01, 1e4), st.booleans()).map(lambda a: build(*a)))


def _ref_decayed(args, kw):
    ts, now, hl = args
    return ref_decayed(ts, now, hl, kw.get("keys"), kw.get("num_groups"), kw.get("weights"))


def _image_draw():
    def build(h, w, c, oh, ow, seed):
        rng = np.random.default_rng(seed)
        shape = (h, w) if c == 0 else (h, w, c)
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        k = max(c, 1)
        return (img, oh, ow), {"mean": [0.5] * k, "std": [0.25] * k}
    return st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([0, 1, 3]), st.integers(1, 12),
                     st.integers(1, 12), st.integers(0, 2**32)).map(lambda t: build(*t))


def _ref_image(args, kw):
    img, oh, ow = args
    return ref_image(img, oh, ow, kw["mean"], kw["std"])


def _vocab_lookup(tokens, strings, oov):
    return ops.Vocab(tokens, oov_id=oov).lookup(strings)


def _ref_vocab(args, kw):
    tokens, strings, oov = args
    table = {t: i + 1 for i, t in enumerate(tokens)}
    return np.array([table.get(s, oov) for s in list(strings)], np.int64)


CASES = [
    Case("hash_strings", ops.hash_strings,
         st.tuples(STRINGS, st.integers(1, I64_MAX), st.integers(0, 2**32 - 1)).map(lambda t: (t, {})),
         ref=lambda a, k: ref_hash(list(a[0]), a[1], a[2])),
    Case("murmur3_32", ops.murmur3_32, st.tuples(STRINGS, st.integers(0, 2**32 - 1)).map(lambda t: (t, {})),
         ref=lambda a, k: np.array([mmh3.hash(s, a[1], signed=False) for s in list(a[0])], np.uint32)),
    Case("hash_ids", ops.hash_ids,
         st.tuples(st.lists(st.integers(I64_MIN, I64_MAX), max_size=30).map(lambda v: np.array(v, np.int64)),
                   st.integers(1, I64_MAX), st.integers(0, 2**32 - 1)).map(lambda t: (t, {})),
         arrays=(0,), ref=lambda a, k: ref_hash_ids(a[0], a[1], a[2])),
    Case("bucketize", ops.bucketize, _bucketize_draw(), arrays=(0, 1), ref=_ref_bucketize),
    Case("minmax_scale", ops.minmax_scale, _affine_draw(), arrays=(0,), ref=_ref_affine(True), check=near(2e-6)),
    Case("zscore", ops.zscore, _affine_draw(), arrays=(0,), ref=_ref_affine(False), check=near(2e-6)),
    Case("clip", ops.clip, _affine_draw(), arrays=(0,), ref=_ref_clip),
    Case("log1p", ops.log1p, st.sampled_from([np.float32, np.float64]).flatmap(f_array).map(lambda x: ((x,), {})),
         arrays=(0,), ref=_ref_log1p, check=near(1e-6, 0)),
    Case("one_hot", ops.one_hot, st.tuples(_ids(), st.integers(0, 40)).map(lambda t: (t, {})), arrays=(0,),
         ref=lambda a, k: ref_one_hot(a[0], a[1])),
    Case("multi_hot", ops.multi_hot, _multi_hot_draw(), arrays=(0, 1), ref=lambda a, k: ref_multi_hot(*a)),
    Case("vocab_lookup", _vocab_lookup,
         st.tuples(st.lists(TEXT, unique=True, max_size=10), STRINGS, st.integers(I64_MIN, I64_MAX))
         .map(lambda t: (t, {})), ref=_ref_vocab),
    Case("window_agg", ops.window_agg, _window_draw(False), arrays=(0, 1), ref=lambda a, k: ref_window(*a),
         check=near(1e-9, 1e-9)),
    Case("window_agg_grouped", ops.window_agg_grouped, _window_draw(True), arrays=(0, 1, 2),
         ref=lambda a, k: ref_grouped(*a), check=near(1e-9, 1e-9)),
    Case("decayed_count", ops.decayed_count, _decayed_draw(), arrays=(0, "keys", "weights"), ref=_ref_decayed,
         check=near(1e-9, 1e-12)),
    Case("top_k", ops.top_k,
         st.tuples(st.sampled_from([np.float32, np.float64]).flatmap(f_array), st.integers(0, 50))
         .map(lambda t: (t, {})), arrays=(0,), ref=lambda a, k: ref_top_k(*a)),
    Case("image_preprocess", ops.image_preprocess, _image_draw(), arrays=(0,), ref=_ref_image,
         check=near(1e-6, 1e-6)),
    Case("tokenize", ops.tokenize,
         st.tuples(st.lists(WORDS, max_size=8).flatmap(_strings_forms), st.integers(1, 2**40),
                   st.sampled_from([(1,), (1, 2), (2, 1, 3)]), st.integers(1, 12))
         .map(lambda t: ((t[0], t[1]), {"ngrams": t[2], "max_tokens": t[3]})),
         ref=lambda a, k: ref_tokenize(list(a[0]), a[1], k["ngrams"], k["max_tokens"])),
]
BY_NAME = {c.name: c for c in CASES}
assert set(BY_NAME) >= set(ops.__all__) - {"MAX_ELEMENTS", "Vocab"}, "every op has a fuzz case"


def call(case: Case, args, kw):
    args, kw = list(args), dict(kw)
    return case.fn(*args, **kw)


def get(args, kw, pos):
    return args[pos] if isinstance(pos, int) else kw.get(pos)


def put(args, kw, pos, value):
    args, kw = list(args), dict(kw)
    if isinstance(pos, int):
        args[pos] = value
    else:
        kw[pos] = value
    return args, kw


# ---------------------------------------------------------------------------------------------
# memory layouts with the same values


def _reversed(a):
    return np.ascontiguousarray(a[::-1])[::-1] if a.ndim else a


def _swapped(a):
    return a.astype(a.dtype.newbyteorder()) if a.dtype.itemsize > 1 else a


def _readonly(a):
    b = a.copy()
    b.flags.writeable = False
    return b


LAYOUTS = {
    "contiguous": lambda a: a,
    "strided": lambda a: strided(a) if a.ndim and a.shape[0] else a,
    "negative-strides": _reversed,
    "misaligned": lambda a: misaligned(a) if a.size else a,
    "byte-swapped": _swapped,
    "fortran": np.asfortranarray,
    "read-only": _readonly,
}


@pytest.mark.parametrize("name", list(BY_NAME))
def test_matches_the_reference_in_every_layout(name: str) -> None:
    case = BY_NAME[name]

    @FUZZ
    @given(case.draw, st.lists(st.sampled_from(list(LAYOUTS)), min_size=3, max_size=3))
    def run(drawn, layouts):
        args, kw = drawn
        expected = case.ref(args, kw)
        for pos, layout in zip(case.arrays, layouts * 2, strict=False):
            a = get(args, kw, pos)
            if type(a) is np.ndarray:
                v = LAYOUTS[layout](a)
                np.testing.assert_array_equal(v, a)
                args, kw = put(args, kw, pos, v)
        (case.check or exact)(call(case, args, kw), expected)

    run()


# ---------------------------------------------------------------------------------------------
# look-alikes: refused, and none of their code runs

CALLS: list[str] = []  # every hook of a hostile object appends its name here
TARGET = np.zeros((2, 8))  # what hooks try to mutate mid-call


def _hook(name: str, result=None):
    def hook(self, *a, **k):
        CALLS.append(name)
        TARGET.shape = (8, 2) if TARGET.shape == (2, 8) else (2, 8)  # a mutation during the call
        return result() if callable(result) else result
    return hook


class LyingList(list):
    __len__ = _hook("list.__len__", 1 << 20)
    __iter__ = _hook("list.__iter__", lambda: iter(["x"] * 3))
    __getitem__ = _hook("list.__getitem__", "x")


class LyingTuple(tuple):
    __len__ = _hook("tuple.__len__", 0)
    __iter__ = _hook("tuple.__iter__", lambda: iter([1.0] * 99))


class LyingDict(dict):
    __len__ = _hook("dict.__len__", 5000)
    __iter__ = _hook("dict.__iter__", lambda: iter([f"k{i}" for i in range(5000)]))
    keys = _hook("dict.keys", lambda: [f"k{i}" for i in range(5000)])


class SeqLike:
    __len__ = _hook("seq.__len__", 1 << 20)
    __getitem__ = _hook("seq.__getitem__", 1.0)
    __iter__ = _hook("seq.__iter__", lambda: iter([1, 2, 3]))


class IndexLike:
    __index__ = _hook("index.__index__", 3)


class IntSub(int):
    __index__ = _hook("int.__index__", 2**62)
    __int__ = _hook("int.__int__", 2**62)
    __le__ = _hook("int.__le__", True)
    __ge__ = _hook("int.__ge__", True)


class FloatSub(float):
    __float__ = _hook("float.__float__", 1.0)
    __index__ = _hook("float.__index__", 1)


class ArrayLike:
    __array__ = _hook("__array__", lambda: np.zeros(1 << 20))


class ArrayInterface:
    """Claims a big float64 buffer over 8 real bytes: numpy itself would read past them."""
    _small = np.zeros(1)
    __array_interface__ = property(_hook("__array_interface__", lambda: {
        "shape": (1 << 20,), "typestr": "<f8", "version": 3,
        "data": (ArrayInterface._small.__array_interface__["data"][0], False)}))


class NdSub(np.ndarray):
    view = _hook("ndarray.view", lambda: np.zeros(1 << 20))
    __len__ = _hook("ndarray.__len__", 1 << 20)


class StrSub(str):
    __len__ = _hook("str.__len__", 1 << 20)
    __iter__ = _hook("str.__iter__", lambda: iter("xyz"))
    __eq__ = _hook("str.__eq__", True)
    __hash__ = _hook("str.__hash__", 0)
    __repr__ = _hook("str.__repr__", "x")
    lower = _hook("str.lower", "ESCAPED")
    encode = _hook("str.encode", b"ESCAPED")
    isascii = _hook("str.isascii", True)


def _ndsub():
    return np.arange(6, dtype=np.float64).view(NdSub)


HOSTILE = {
    "list-subclass": lambda: LyingList(["a", "b"]),
    "tuple-subclass": lambda: LyingTuple((1.0, 2.0)),
    "dict-subclass": lambda: LyingDict({"a": 1}),
    "sequence-like": SeqLike,
    "index-like": IndexLike,
    "int-subclass": lambda: IntSub(3),
    "float-subclass": lambda: FloatSub(2.0),
    "array-like": ArrayLike,
    "array-interface": ArrayInterface,
    "ndarray-subclass": _ndsub,
    "masked-array": lambda: np.ma.masked_array([1.0, 2.0], mask=[False, True]),
    "str-subclass": lambda: StrSub("murmur3"),
}


def _positions(case: Case, drawn) -> list:
    args, kw = drawn
    return [*range(len(args)), *kw]


@pytest.mark.parametrize("name", list(BY_NAME))
def test_lookalikes_are_refused_and_never_called(name: str) -> None:
    case = BY_NAME[name]

    @FUZZ
    @given(case.draw, st.data())
    def run(drawn, data):
        args, kw = drawn
        pos = data.draw(st.sampled_from(_positions(case, drawn)), label="position")
        hostile = data.draw(st.sampled_from(list(HOSTILE)), label="hostile")
        nested = data.draw(st.booleans(), label="inside a list")
        value = HOSTILE[hostile]()
        if nested:  # the look-alike as an element of an exact list
            value = [value]
        args, kw = put(args, kw, pos, value)
        del CALLS[:]
        try:
            call(case, args, kw)
        except TYPED as exc:
            if not nested:
                assert isinstance(exc, ops.InputRefused), exc
        assert CALLS == [], f"script code ran inside {name}: {CALLS}"
        assert TARGET.shape == (2, 8)

    run()


def test_lookalikes_are_bad_input() -> None:
    """The refusal is a typed BadInput that names the argument and says why."""
    for value in (LyingList(["a"]), LyingTuple(("a",)), SeqLike()):
        with pytest.raises(BadInput, match=r"strings must be .* \(exact types only\)"):
            ops.hash_strings(value, 10)
    with pytest.raises(BadInput, match="tokens"):
        ops.Vocab(LyingDict({"a": 1}))
    with pytest.raises(BadInput, match="depth"):
        ops.one_hot(np.zeros(3, np.int64), IndexLike())
    with pytest.raises(BadInput, match="std"):
        ops.zscore(np.zeros((2, 8)), 0.0, FloatSub(1.0))
    for value in (ArrayLike(), ArrayInterface(), _ndsub(), np.ma.masked_array([1.0])):
        with pytest.raises(BadInput, match="x"):
            ops.log1p(value)
    assert CALLS == []


@FUZZ
@given(st.lists(TEXT, max_size=10), st.integers(1, 1000))
def test_str_subclass_elements_are_read_as_their_str_value(texts, nb) -> None:
    """A str subclass inside a list is read as its str data (join, str.encode): none of its
    methods runs, and the result is the plain strings' result."""
    del CALLS[:]
    hostile = [StrSub(t) for t in texts]
    np.testing.assert_array_equal(ops.hash_strings(hostile, nb), ref_hash(texts, nb))
    np.testing.assert_array_equal(ops.hash_strings(hostile + [StrSub("a\0b")], nb), ref_hash([*texts, "a\0b"], nb))
    ids, lengths = ops.tokenize(hostile, nb)
    np.testing.assert_array_equal(ids, ref_tokenize(texts, nb)[0])
    v = ops.Vocab([StrSub(t) for t in dict.fromkeys(texts)])
    table = {t: i + 1 for i, t in enumerate(dict.fromkeys(texts))}
    np.testing.assert_array_equal(v.lookup(hostile), [table[t] for t in texts])
    assert CALLS == []


# ---------------------------------------------------------------------------------------------
# wrong dtypes, 0-d arrays, empty and huge inputs

ODD = [np.bool_, np.int8, np.uint16, np.uint64, np.float16, np.longdouble, np.complex128, object, "U3", "S3",
       "M8[s]", "m8[s]", [("a", np.int32)]]


@pytest.mark.parametrize("name", [c.name for c in CASES if c.arrays])
def test_wrong_dtypes_and_0d_give_a_typed_error_or_the_right_shape(name: str) -> None:
    case = BY_NAME[name]

    @FUZZ
    @given(case.draw, st.data())
    def run(drawn, data):
        args, kw = drawn
        pos = data.draw(st.sampled_from([p for p in case.arrays if type(get(args, kw, p)) is np.ndarray]))
        a = get(args, kw, pos)
        how = data.draw(st.sampled_from([*map(str, ODD), "0-d", "empty"]))
        if how == "0-d":
            v = np.array(a.flat[0] if a.size else 0, a.dtype)
        elif how == "empty":
            v = a[:0]
        else:
            dt = ODD[[str(d) for d in ODD].index(how)]
            try:
                with warnings.catch_warnings():  # NaN -> int, complex -> real: the values do not matter here
                    warnings.simplefilter("ignore")
                    v = a.astype(dt)
            except (TypeError, ValueError):
                v = np.zeros(a.shape, dt)
        args, kw = put(args, kw, pos, v)
        try:
            out = call(case, args, kw)
        except TYPED:
            return
        for o in out if isinstance(out, tuple) else (out,):
            assert isinstance(o, float | np.ndarray)
            assert type(o) is not np.ndarray or o.dtype.kind in "fiu"

    run()


def _huge(dtype=np.float64, n=ops.MAX_ELEMENTS + 1):
    return np.broadcast_to(np.zeros(1, dtype), (n,))  # over the cap, no memory


def test_sizes_over_the_cap_are_refused_before_allocation() -> None:
    big = ops.MAX_ELEMENTS
    refused = [
        lambda: ops.log1p(_huge()),
        lambda: ops.hash_ids(_huge(np.int64), 10),
        lambda: ops.bucketize(_huge(), [0.0]),
        lambda: ops.top_k(_huge(), 3),
        lambda: ops.one_hot(np.zeros(3, np.int64), big),
        lambda: ops.one_hot(np.zeros(2, np.int64), big // 2 + 1),
        lambda: ops.multi_hot(np.zeros(3, np.int64), np.zeros(0, np.int64), big),
        lambda: ops.window_agg_grouped(np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1), 0, [1, 2], big),
        lambda: ops.image_preprocess(np.zeros((1, 1, 3), np.uint8), big, big),
        lambda: ops.image_preprocess(np.zeros((1, 1, 3), np.uint8), 1 << 14, 1 << 14),
        lambda: ops.tokenize(["a", "b"], 10, max_tokens=big),
        lambda: ops.decayed_count(np.zeros(1, np.int64), 0, 1.0, keys=np.zeros(1, np.int64), num_groups=big + 1),
        lambda: ops.hash_strings(["a"], 2**63),
        lambda: ops.window_agg(np.zeros(1, np.int64), np.zeros(1), 2**63, [1]),
    ]
    for f in refused:
        with pytest.raises(ValueError):
            f()


# ---------------------------------------------------------------------------------------------
# another thread mutates the inputs while the op runs


def _scribbler(stop: threading.Event, arrays: list[np.ndarray], rng: np.random.Generator) -> threading.Thread:
    """A thread overwriting ``arrays`` with random bytes until ``stop``."""
    def run():
        while not stop.is_set():
            for a in arrays:
                raw = a.view(np.uint8)
                raw[...] = rng.integers(0, 256, raw.shape, dtype=np.uint8)
    return threading.Thread(target=run, daemon=True)


@FUZZ
@given(st.integers(0, 2**32 - 1))
def test_values_changing_under_a_call_stay_in_bounds(seed) -> None:
    """Offsets, keys, ids and timestamps overwritten with random bytes by another thread while C
    reads them (the GIL is released): a typed error or a result of the right shape."""
    rng = np.random.default_rng(seed)
    n = 4096
    offsets = np.sort(rng.integers(0, n, 65)).astype(np.int64)
    ids = rng.integers(0, 64, n).astype(np.int64)
    keys = rng.integers(0, 8, n).astype(np.int64)
    ts = np.arange(n, dtype=np.int64)
    vals = rng.random(n)
    stop = threading.Event()
    t = _scribbler(stop, [offsets, keys, ts, ids], rng)
    t.start()
    try:
        for _ in range(8):
            for f, shape in (
                (lambda: ops.multi_hot(offsets, ids, 64), (64, 64)),
                (lambda: ops.window_agg_grouped(keys, ts, vals, n, [10, 100, 1000], 8), (8, 3, 6)),
                (lambda: ops.decayed_count(ts, n, 50.0, keys=keys, num_groups=8), (8,)),
                (lambda: ops.one_hot(ids, 64), (n, 64)),
                (lambda: ops.window_agg(ts, vals, n, [5, 50]), (2, 6)),
                (lambda: ops.top_k(vals, 100), None),
            ):
                try:
                    out = f()
                except ValueError:
                    continue
                if shape is not None:
                    assert out.shape == shape
    finally:
        stop.set()
        t.join()


def test_shape_changing_under_a_call_cannot_desync_the_sizes() -> None:
    """Another thread flips the script's array between shapes (2, k), (k, 2), (2k,) and (4, k/2) as
    fast as it can while ops run: each op works on a private view whose metadata nobody else holds,
    so the sizes passed to C always match the buffer (the old wrapper read the shape twice and
    crashed the process here)."""
    k = 1 << 12
    x = np.arange(2 * k, dtype=np.float64).reshape(2, k)
    flat = x.ravel().copy()
    shapes = [(2, k), (k, 2), (2 * k,), (4, k // 2)]
    stop = threading.Event()

    def flip():
        i = 0
        while not stop.is_set():
            x.shape = shapes[i % 4]
            i += 1

    t = threading.Thread(target=flip, daemon=True)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible: between any two reads
    t.start()
    try:
        for _ in range(3000):
            out = ops.zscore(x, 1.0, 2.0)
            assert out.shape in shapes
            np.testing.assert_array_equal(out.ravel(), (flat - 1.0) / 2.0)
            assert ops.clip(x, 0.0, 10.0).shape in shapes
            assert ops.minmax_scale(x, 0.0, 4.0).shape in shapes
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)


def test_vocab_tokens_holding_nul_are_not_false_duplicates() -> None:
    """Found by the fuzz suite: NUL-joined, '' and '\\0' split into two empty pieces, which the table
    reported as a duplicate before noticing the separator count was off."""
    v = ops.Vocab(["", "\0", "0"])
    np.testing.assert_array_equal(v.lookup(["0", "\0", "", "x"]), [3, 2, 1, 0])
    with pytest.raises(ValueError, match="duplicate token '' at position 2"):
        ops.Vocab(["", "\0", ""])


def test_dtype_changing_under_a_call_cannot_desync_the_sizes() -> None:
    """The same with the dtype flipped between float64 and float32 (the element count doubles):
    whichever the op saw, it read and wrote exactly the array's bytes."""
    k = 1 << 12
    x = np.ones(2 * k, np.float64)
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            x.dtype = np.float32 if x.dtype == np.float64 else np.float64

    t = threading.Thread(target=flip, daemon=True)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    t.start()
    try:
        for _ in range(3000):
            for out in (ops.log1p(x), ops.zscore(x, 0.0, 1.0), ops.clip(x, 0.0, 1.0)):
                assert out.nbytes == 16 * k and out.dtype in (np.float32, np.float64)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
