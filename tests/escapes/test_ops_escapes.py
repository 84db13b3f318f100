"""Red team, native operators: scripts that attack ``edge.ops`` through the real sandbox in thread mode
(the in-process layers alone), by class, several variants each.

- lying sequences: list/tuple/dict subclasses whose ``__len__``/``__iter__``/``keys`` disagree with
  their contents (the old wrapper sized buffers by them: out-of-bounds reads in C, heap contents
  returned as vocabulary ids);
- subclass tricks: int/float/str subclasses whose methods the old wrapper called mid-op;
- reaching cffi objects: the ops' ``lib``/``ffi``, a ``Vocab``'s table;
- mutation during a call: a hook that reshapes an input array between the wrapper's checks and the
  C call (the old wrapper read the shape twice: a heap overflow that killed the host);
- huge sizes: inputs and outputs over the cap, lengths that claim terabytes.

Contained means: a typed error of the expected kind, the marker never comes back, and the host is
alive (a crash fails the whole run). Refusals of look-alikes are ``BadInput`` (code 1), raised
before anything reaches C; over-the-cap sizes are a script ``ValueError`` raised before anything is
allocated. Helpers (packing with the test key, loading, calling) are test_escapes.py's.
"""
from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_escapes import MARKER, SYSTEM, build, load_and_call

from vm.errors import BadInput, EdgeError, PolicyError, ScriptError
from vm.host.runtime import Runtime


@dataclass(frozen=True)
class Attack:
    """``expect``: "refused" (BadInput before C), "limit" (a ValueError naming the limit), or
    "blocked" (PolicyError, or a script AttributeError/TypeError: the door does not exist);
    ``skip_policy``: pack without the source check (the run-time layers alone must stop it)."""

    name: str
    source: str
    expect: str
    skip_policy: bool = False


def attack(name: str, source: str, expect: str, *, skip_policy: bool = False) -> Attack:
    return Attack(name, textwrap.dedent(source), expect, skip_policy)


LYING_SEQUENCES = [
    attack("list-len-hash", """
        import edge

        class L(list):
            def __len__(self):
                return 1 << 16

        def entry(inputs):
            out = edge.ops.hash_strings(L(["a", "b\\0c"]), 10)
            return "ESCAPED: hashed " + str(len(out)) + " strings out of 2"
        """, "refused"),
    attack("list-len-tokenize", """
        import edge

        class L(list):
            def __len__(self):
                return 3

        def entry(inputs):
            ids, lengths = edge.ops.tokenize(L(["a b", "c\\0d", "e", "f g h", "i"]), 97)
            return "ESCAPED: " + str(lengths.tolist())
        """, "refused"),
    attack("dict-iter-vocab", """
        import edge

        class D(dict):
            def __iter__(self):
                return iter(["k%d" % i for i in range(2000)])

            def __len__(self):
                return 2000

        def entry(inputs):
            v = edge.ops.Vocab(D({"a": 1}))
            ids = set(v.lookup(["k%d" % i for i in range(2000)]).tolist()) - {0, 1}
            return "ESCAPED: ids read from the heap: " + str(sorted(ids)[:5]) if ids else "ESCAPED: built"
        """, "refused"),
    attack("tuple-iter-windows", """
        import numpy as np
        import edge

        class T(tuple):
            def __iter__(self):
                return iter([1, 2, 3, 4, 5, 6, 7, 8])

        def entry(inputs):
            ts = np.arange(10, dtype=np.int64)
            out = edge.ops.window_agg(ts, np.ones(10), 9, T((5,)))
            return "ESCAPED: " + str(out.shape)
        """, "refused"),
    attack("sequence-like-boundaries", """
        import numpy as np
        import edge

        class Seq:
            def __len__(self):
                return 1 << 20

            def __getitem__(self, i):
                return float(i)

        def entry(inputs):
            return "ESCAPED: " + str(edge.ops.bucketize(np.ones(3), Seq()).tolist())
        """, "refused"),
]

SUBCLASS_TRICKS = [
    attack("str-subclass-algorithm", """
        import numpy as np
        import edge

        RAN = []

        class S(str):
            def __eq__(self, other):
                RAN.append(other)
                return True

            def __hash__(self):
                return 1

        def entry(inputs):
            edge.ops.hash_ids(np.arange(4), 10, algorithm=S("md5"))
            return "ESCAPED: script code ran inside the op: " + str(RAN)
        """, "refused"),
    attack("float-subclass-param", """
        import numpy as np
        import edge

        RAN = []

        class F(float):
            def __float__(self):
                RAN.append("float")
                return 0.0

        def entry(inputs):
            edge.ops.minmax_scale(np.ones(4), F(0.5), 2.0)
            return "ESCAPED: script code ran inside the op: " + str(RAN)
        """, "refused"),
    attack("int-subclass-depth", """
        import numpy as np
        import edge

        class I(int):
            def __le__(self, other):
                return True

            def __ge__(self, other):
                return True

        def entry(inputs):
            out = edge.ops.one_hot(np.arange(3), I(4))
            return "ESCAPED: a lying int reached the op: " + str(out.shape)
        """, "refused"),
    attack("vocab-subclass", """
        import edge

        class V(edge.ops.Vocab):
            def lookup(self, strings):
                return "ESCAPED: a Vocab subclass overrides its methods"

        def entry(inputs):
            return V(["a"]).lookup(["a"])
        """, "blocked"),
]

CFFI_OBJECTS = [
    attack("ops-lib-by-name", """
        import edge

        def entry(inputs):
            return "ESCAPED: " + str(getattr(edge.ops, "l" + "ib"))
        """, "blocked"),
    attack("ops-private-ffi", """
        import edge

        def entry(inputs):
            return "ESCAPED: " + str(edge.ops._ffi)  # POLICY
        """, "blocked", skip_policy=True),
    attack("vocab-table-attribute", """
        import edge

        def entry(inputs):
            return "ESCAPED: " + str(edge.ops.Vocab(["a"])._table)
        """, "blocked", skip_policy=True),
    attack("vocab-table-by-subclass-slot", """
        import edge

        class V(edge.ops.Vocab):
            __slots__ = ("box",)

        def entry(inputs):
            return "ESCAPED: " + str(V(["a"])._table)
        """, "blocked", skip_policy=True),
    attack("vocab-attributes-and-errors", """
        import edge

        def entry(inputs):
            v = edge.ops.Vocab(["a"])
            found = [n for n in ("table", "handle", "lib", "ffi", "ptr", "cdata") if hasattr(v, n)]
            try:
                v.oov_id = 5
                found.append("oov_id writable")
            except AttributeError:
                pass
            try:
                edge.ops.hash_ids(edge.ops.Vocab, 10)
            except TypeError as e:
                found += [a for a in e.args if not isinstance(a, str)]
            if found:
                return "ESCAPED: " + str(found)
            raise AttributeError("nothing but the vetted methods")
        """, "blocked"),
]

MUTATION_DURING_A_CALL = [
    attack("float-hook-reshapes-input", """
        import numpy as np
        import edge

        def entry(inputs):
            x = np.zeros((2, 1 << 14))

            class F(float):
                def __float__(self):
                    x.shape = (1 << 14, 2)
                    return 1.0

            out = edge.ops.zscore(x, 0.0, F(1.0))
            return "ESCAPED: the op ran on a stale shape: " + str(out.shape)
        """, "refused"),
    attack("float-hook-reshapes-clip", """
        import numpy as np
        import edge

        def entry(inputs):
            x = np.zeros((4, 1 << 13))

            class F(float):
                def __float__(self):
                    x.shape = (1 << 13, 4)
                    return 1.0

            out = edge.ops.clip(x, F(0.0), 1.0)
            return "ESCAPED: the op ran on a stale shape: " + str(out.shape)
        """, "refused"),
    attack("index-hook-retypes-timestamps", """
        import numpy as np
        import edge

        def entry(inputs):
            ts = np.zeros(1 << 14, np.int64)

            class I:
                def __index__(self):
                    ts.dtype = np.int8
                    return 0

            out = edge.ops.window_agg(ts, np.ones(1 << 14), I(), [10])
            return "ESCAPED: the op read past the timestamps: " + str(out.tolist())
        """, "refused"),
    attack("len-hook-grows-the-list", """
        import edge

        class L(list):
            def __len__(self):
                self.extend(["x"] * 100)
                return 2

        def entry(inputs):
            out = edge.ops.murmur3_32(L(["a", "b"]))
            return "ESCAPED: " + str(len(out))
        """, "refused"),
]

HUGE_SIZES = [
    attack("len-claims-terabytes", """
        import edge

        class L(list):
            def __len__(self):
                return 1 << 40

        def entry(inputs):
            return "ESCAPED: " + str(edge.ops.hash_strings(L(["a"]), 10).shape)
        """, "refused"),
    attack("broadcast-over-the-cap", """
        import numpy as np
        import edge

        def entry(inputs):
            ids = np.broadcast_to(np.zeros(1, np.int64), (edge.ops.MAX_ELEMENTS + 1,))
            return "ESCAPED: " + str(edge.ops.hash_ids(ids, 10).shape)
        """, "limit"),
    attack("one-hot-output-over-the-cap", """
        import numpy as np
        import edge

        def entry(inputs):
            return "ESCAPED: " + str(edge.ops.one_hot(np.zeros(4, np.int64), edge.ops.MAX_ELEMENTS).shape)
        """, "limit"),
    attack("tokenize-output-over-the-cap", """
        import edge

        def entry(inputs):
            ids, _ = edge.ops.tokenize(["a"] * 64, 10, max_tokens=1 << 23)
            return "ESCAPED: " + str(ids.shape)
        """, "limit"),
    attack("image-output-over-the-cap", """
        import numpy as np
        import edge

        def entry(inputs):
            out = edge.ops.image_preprocess(np.zeros((2, 2, 3), np.uint8), 1 << 14, 1 << 14)
            return "ESCAPED: " + str(out.shape)
        """, "limit"),
]

CLASSES = {
    "lying-sequences": LYING_SEQUENCES,
    "subclass-tricks": SUBCLASS_TRICKS,
    "cffi-objects": CFFI_OBJECTS,
    "mutation-during-a-call": MUTATION_DURING_A_CALL,
    "huge-sizes": HUGE_SIZES,
}
ATTACKS = [pytest.param(a, id=f"{cls}/{a.name}") for cls, attacks in CLASSES.items() for a in attacks]


@pytest.fixture(scope="module")
def rt(keys_dir: Path) -> Iterator[Runtime]:
    runtime = Runtime({"keys": keys_dir, "deadline_ms": 10_000, "isolation": "thread"})
    yield runtime
    runtime.close()


def test_every_class_has_several_variants() -> None:
    assert all(len(attacks) >= 4 for attacks in CLASSES.values())


@pytest.mark.parametrize("a", ATTACKS)
def test_ops_attack_is_contained(a: Attack, rt: Runtime, tmp_path: Path, keys_dir: Path) -> None:
    business = a.name
    bundle = build(tmp_path, keys_dir, f"ops-{a.name}", {"features.py": a.source}, skip=a.skip_policy,
                   business=business)
    stage, value = load_and_call(rt, bundle, SYSTEM, business)
    assert stage != "returned", f"{a.name}: NOT contained -- the script returned {value!r}"
    assert isinstance(value, EdgeError), value
    assert MARKER not in str(value), f"{a.name}: the marker leaked through an error: {value}"
    if a.expect == "refused":
        assert isinstance(value, BadInput) and value.code == 1, f"{a.name}: expected a BadInput refusal, got {value!r}"
        assert "exact types only" in str(value), value
    elif a.expect == "limit":
        assert isinstance(value, ScriptError) and value.detail.get("type") == "ValueError", value
        assert "exceed" in str(value), value
    else:
        assert isinstance(value, PolicyError) or (
            isinstance(value, ScriptError) and value.detail.get("type") in ("AttributeError", "TypeError")), value
