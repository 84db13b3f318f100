"""What a script can reach from ``edge.ops``: only the vetted functions, and no cffi object behind
any of them, whatever the attribute-name policy allows.

The walk below ignores the name policy on purpose (it follows ``_private`` attributes too): the
ops must be safe by construction, not because ``_table`` happens to start with an underscore. It
follows every attribute of the module's members, of ``Vocab`` objects, of what each op returns and
raises, and the function internals that hold references (``__self__``, ``__wrapped__``,
``__func__``, ``__closure__`` cells, ``__defaults__``, ``__kwdefaults__``). It does not follow
``__globals__``/``__builtins__`` (every Python function's module; the policy refuses them, and the
escape tests check it) nor the class hierarchy (``__class__``, ``__mro__``, ``__subclasses__``...).
"""
from __future__ import annotations

import copy
import types

import _cffi_backend
import numpy as np
import pytest

from vm.ml import ops
from vm.sandbox import edge

NOT_FOLLOWED = frozenset({
    "__globals__", "__builtins__", "__class__", "__base__", "__bases__", "__mro__", "__subclasses__",
    "__objclass__", "__init_subclass__", "__subclasshook__", "__new__", "__code__", "__module__",
    "__doc__", "__name__", "__qualname__", "__annotations__", "__type_params__", "__dictoffset__",
})
FUNCTION_INTERNALS = ("__self__", "__wrapped__", "__func__", "__closure__", "__defaults__", "__kwdefaults__",
                      "__dict__")


def edge_ops() -> types.ModuleType:
    module = edge.build(bundle_name="b", bundle_version="1.0.0", sessions={}, log=lambda _: None)
    return module.ops


def is_cffi(obj: object) -> bool:
    return type(obj).__module__ == "_cffi_backend" or isinstance(obj, _cffi_backend.FFI)


def reachable(roots: dict[str, object], depth: int = 6) -> dict[str, object]:
    """path -> object for everything reachable from ``roots`` (see the module docstring)."""
    seen: dict[int, str] = {}
    found: dict[str, object] = {}
    stack = [(path, obj, 0) for path, obj in roots.items()]
    while stack:
        path, obj, d = stack.pop()
        if id(obj) in seen or d > depth:
            continue
        seen[id(obj)] = path
        found[path] = obj
        if is_cffi(obj) or isinstance(obj, str | bytes | int | float | bool | type(None)):
            continue
        if type(obj) is np.ndarray:  # its memory doors are the policy's; what owns its buffer is ours
            stack.append((f"{path}.base", obj.base, d + 1))
            continue
        if isinstance(obj, tuple | list):
            stack += [(f"{path}[{i}]", v, d + 1) for i, v in enumerate(obj)]
            continue
        if isinstance(obj, dict | types.MappingProxyType):
            stack += [(f"{path}[{k!r}]", v, d + 1) for k, v in obj.items()]
            continue
        if type(obj) is types.CellType:
            stack.append((f"{path}.cell_contents", obj.cell_contents, d + 1))
            continue
        names = {n for n in dir(obj) if not (n.startswith("__") and n.endswith("__"))}
        names |= {n for n in FUNCTION_INTERNALS if hasattr(obj, n)}
        for name in sorted(names - NOT_FOLLOWED):
            try:
                value = getattr(obj, name)
            except Exception:  # noqa: BLE001 - a property that refuses is not a reference
                continue
            stack.append((f"{path}.{name}", value, d + 1))
    return found


def results_and_errors() -> dict[str, object]:
    """What calling each op hands back: results, and the exceptions (with their args) of bad calls."""
    v = ops.Vocab(["a", "b"])
    x = np.arange(6, dtype=np.float64)
    good = {
        "vocab": v, "lookup": v.lookup(["a", "z"]), "vocab_lookup": ops.vocab_lookup(["b"], v),
        "hash_strings": ops.hash_strings(["a"], 10), "murmur3_32": ops.murmur3_32(np.array(["a", "bc"])),
        "hash_ids": ops.hash_ids(np.arange(3), 10), "bucketize": ops.bucketize(x, [1.0, 2.0]),
        "minmax_scale": ops.minmax_scale(x, 0.0, 5.0), "zscore": ops.zscore(x, 1.0, 2.0),
        "clip": ops.clip(x, 0.0, 1.0), "log1p": ops.log1p(x), "one_hot": ops.one_hot(np.arange(3), 4),
        "multi_hot": ops.multi_hot(np.array([0, 1, 3]), np.arange(3), 4),
        "window_agg": ops.window_agg(np.arange(6), x, 5, [2]),
        "window_agg_grouped": ops.window_agg_grouped(np.zeros(6, np.int64), np.arange(6), x, 5, [2], 1),
        "decayed_count": ops.decayed_count(np.arange(6), 5, 2.0),
        "top_k": ops.top_k(x, 2), "image_preprocess": ops.image_preprocess(np.zeros((2, 2, 3), np.uint8), 1, 1),
        "tokenize": ops.tokenize(["a b"], 10),
    }
    bad = {
        "hash_strings": lambda: ops.hash_strings([b"x"], 10), "hash_ids": lambda: ops.hash_ids(v, 10),
        "vocab": lambda: ops.Vocab(["a", "a"]), "lookup": lambda: v.lookup([1]),
        "one_hot": lambda: ops.one_hot(np.arange(3), 2**62), "bucketize": lambda: ops.bucketize(x, [2.0, 1.0]),
        "multi_hot": lambda: ops.multi_hot(np.array([0, 9]), np.arange(3), 4),
        "window_agg": lambda: ops.window_agg(np.arange(6)[::-1], x, 5, [2]),
        "clip": lambda: ops.clip(x, 1.0, 0.0), "tokenize": lambda: ops.tokenize(["a"], 0),
    }
    for name, f in bad.items():
        try:
            f()
        except Exception as exc:  # noqa: BLE001 - collected to be walked
            good[f"raised:{name}"] = exc
            good[f"raised:{name}.args"] = exc.args
            good[f"raised:{name}.attributes"] = {k: getattr(exc, k) for k in dir(exc)
                                                 if not k.startswith("__") and k != "with_traceback"}
        else:
            pytest.fail(f"{name} did not raise")
    return good


def test_edge_ops_exposes_only_the_vetted_functions() -> None:
    module = edge_ops()
    public = {k for k in vars(module) if not (k.startswith("__") and k.endswith("__"))}
    assert public == set(ops.__all__), public ^ set(ops.__all__)
    assert "__getattr__" not in vars(module)
    for name in public - {"MAX_ELEMENTS", "Vocab"}:
        f = getattr(module, name)
        assert type(f) is types.FunctionType and f.__module__ == "vm.ml.ops", name
        assert not f.__closure__ and not hasattr(f, "__wrapped__"), name
        defaults = (*(f.__defaults__ or ()), *(f.__kwdefaults__ or {}).values())
        assert all(type(d) in (int, float, str, tuple, bool, type(None)) for d in defaults), name
    assert type(module.MAX_ELEMENTS) is int
    with pytest.raises(AttributeError):
        module.lib  # noqa: B018
    with pytest.raises(AttributeError):
        module.ffi  # noqa: B018


def test_no_cffi_object_is_reachable() -> None:
    found = reachable({"edge.ops": edge_ops(), **results_and_errors()})
    cffi = sorted(path for path, obj in found.items() if is_cffi(obj))
    assert not cffi, f"cffi objects reachable from what scripts get: {cffi}"
    modules = sorted(path for path, obj in found.items() if isinstance(obj, types.ModuleType) and path != "edge.ops")
    assert not modules, f"modules reachable: {modules}"
    assert len(found) > 100  # the walk did go somewhere


def test_vocab_is_opaque_and_final() -> None:
    v = ops.Vocab(["a", "b"], oov_id=-1)
    assert [n for n in dir(v) if not n.startswith("__")] == ["lookup", "oov_id"]
    assert not hasattr(v, "__dict__")
    assert v.oov_id == -1 and len(v) == 2 and repr(v) == "Vocab(<2 tokens>, oov_id=-1)"
    with pytest.raises(AttributeError):
        v.oov_id = 5
    with pytest.raises(AttributeError):
        v.table = object()
    with pytest.raises(TypeError, match="cannot be subclassed"):
        type("V", (ops.Vocab,), {})
    with pytest.raises(TypeError):
        ops.vocab_lookup(["a"], object.__new__(type("Fake", (), {})))
    blank = object.__new__(ops.Vocab)  # never built: a typed error, not a crash
    with pytest.raises(AttributeError, match="never built"):
        blank.lookup(["a"])
    assert copy.copy(v) is v and copy.deepcopy(v) is v  # immutable: a copy is the same table
