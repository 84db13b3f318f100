"""Red team, feature snapshots (edge.features, docs/snapshots.md): the data a snapshot hands every
call of every bundle is shared, so a script must not be able to change it for the others, nor read
a snapshot its bundle did not declare. Thread mode (the in-process layers alone), packed without
the source policy (the run-time layers alone), each class several variants; every variant reports
``ESCAPED`` only if it changed shared data or read a snapshot it may not, and a second bundle then
checks that it still reads the original values."""
from __future__ import annotations

import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_escapes import MARKER, SYSTEM, _fast_compiler, build, load_and_call  # noqa: F401 - a fixture

from vm.host.runtime import Runtime
from vm.tools import snapshot as builder

SCORES = [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]

# Each variant's body runs with ``a`` (pop's 1-D score column), ``e`` (its 2-D embedding), ``cols``
# (pop's column mapping) and ``d`` (the stores dict) bound, and ``np`` imported.
WRITES = {
    "item assignment": "a[0] = 666",
    "augmented assignment": "a += 1",
    "fill": "a.fill(666)",
    "sort in place": "a.sort()",
    "partition in place": "a.partition(3)",
    "byteswap in place": "a.byteswap(inplace=True)",
    "ufunc out=": "np.add(a, 1, out=a)",
    "negative out=": "np.negative(a, out=a)",
    "copyto": "np.copyto(a, 666.0)",
    "put method": "a.put(0, 666)",
    "np.put": "np.put(a, 0, 666)",
    "np.place": "np.place(a, a > -1, 666)",
    "setflags": "a.setflags(write=True)\n    a[0] = 666",
    "flags.writeable": "a.flags.writeable = True\n    a[0] = 666",
    "view": "a.view()[0] = 666",
    "reshape view": "a.reshape(2, 4)[0, 0] = 666",
    "reversed view": "a[::-1][7] = 666",
    "asarray": "np.asarray(a)[0] = 666",
    "transpose of 2-D": "e.T[0, 0] = 666",
    "2-D row": "e[0] += 1",
    "data buffer": "a.data[0:4] = b'\\x00\\x00\\x80\\x7f'",
    "frombuffer of the base": "np.frombuffer(a.base, dtype=np.uint8)[0] = 1",
    "as_strided": "np.lib.stride_tricks.as_strided(a, writeable=True)[0] = 666",
    "setitem dunder": "type(a).__setitem__(a, 0, 666)",
    "column mapping assignment": "cols['score'] = np.zeros(8)",
    "column mapping update": "cols.update(score=np.zeros(8))",
    "dict assignment": "d['open'] = [666]",
    "dict delete": "del d['open']",
    "dict.update on the proxy": "dict.update(d, open=[666])",
    "list method on a frozen list": "list.append(d['open'], 666)",
    "nested dict assignment": "d['by_city']['paris'] = (666,)",
}


def _write_source(body: str) -> str:
    return textwrap.dedent('''
        import edge
        import numpy as np


        def entry(inputs):
            cols = edge.features.get("pop")
            a = cols["score"]
            e = cols["emb"]
            d = edge.features.get("stores")
            try:
                attack(a, e, cols, d)
            except Exception as exc:
                return "refused: " + type(exc).__name__
            now = edge.features.get("pop")["score"]
            if now[0] != 7.0 or float(now.sum()) != 28.0 or float(edge.features.get("pop")["emb"].sum()) != 0.0 \\
                    or tuple(edge.features.get("stores")["open"]) != (3, 5) \\
                    or tuple(edge.features.get("stores")["by_city"]["paris"]) != (1,):
                return "ESCAPED: the shared snapshot changed"
            return "no change"


        def attack(a, e, cols, d):
        ''') + "    " + body + "\n"


READS = {
    "undeclared name": 'return edge.features.get("stores")',
    "through getattr": 'return getattr(edge.features, "get")("stores")',
    "str subclass that compares equal": ('class S(str):\n        def __eq__(self, other):\n            return True\n'
                                         '        def __hash__(self):\n            return hash("pop")\n'
                                         '    return edge.features.get(S("stores"))'),
    "rebinding declared": 'edge.features.declared = ("pop", "stores")\n    return edge.features.get("stores")',
    "version of an undeclared one": 'return edge.features.version("stores")',
    "closure of get": 'return edge.features.get.__closure__[0].cell_contents',
    "globals of get": 'return edge.features.get.__globals__["_pinned"].view["stores"].data',
    "module dict": 'return edge.features.__dict__',
    "available lists only declared": 'return [n for n in edge.features.available() if n != "pop"] or None',
}


def _read_source(body: str) -> str:
    return textwrap.dedent('''
        import edge


        def entry(inputs):
            got = steal()
            if got is None:
                return "nothing"
            text = repr(got)
            return ("ESCAPED: " + text) if "open" in text or "paris" in text else "no stores data: " + text[:80]


        def steal():
        ''') + "    " + body + "\n"


@pytest.fixture(scope="module")
def snap_rt(keys_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A thread-mode runtime with the snapshots ``pop`` (columns) and ``stores`` (a dict)."""
    d = tmp_path_factory.mktemp("snaps")
    builder.build("pop", "1.0.0", keys_dir, d / "pop.evs",
                  columns={"score": np.array(SCORES, dtype=np.float32), "emb": np.zeros((8, 4), dtype=np.float32)})
    builder.build("stores", "1.0.0", keys_dir, d / "stores.evs", table={"open": [3, 5], "by_city": {"paris": [1]}})
    rt = Runtime({"keys": keys_dir, "deadline_ms": 5000, "isolation": "thread"})
    rt.load_snapshot(d / "pop.evs")
    rt.load_snapshot(d / "stores.evs")
    yield rt
    rt.close()


def _witness(rt: Runtime, root: Path, keys: Path) -> None:
    """Another bundle still reads the original values."""
    src = ('import edge\n\ndef entry(inputs):\n    s = edge.features.get("pop")["score"]\n'
           '    return [float(x) for x in s], dict(edge.features.get("stores"))["open"]\n')
    path = build(root, keys, "witness", {"features.py": src}, skip=True, business="witness",
                 manifest={"snapshots": ["pop", "stores"]})
    status, value = load_and_call(rt, path, SYSTEM, "witness")
    assert status == "returned" and value == [SCORES, [3, 5]], value


@pytest.mark.parametrize("variant", sorted(WRITES))
def test_scripts_cannot_write_to_shared_snapshot_data(variant: str, tmp_path: Path, keys_dir: Path,
                                                      snap_rt: Runtime) -> None:
    name = "w-" + "".join(c if c.isalnum() else "-" for c in variant)
    path = build(tmp_path, keys_dir, name, {"features.py": _write_source(WRITES[variant])}, skip=True,
                 business=name, manifest={"snapshots": ["pop", "stores"]})
    status, value = load_and_call(snap_rt, path, SYSTEM, name)
    assert not (status == "returned" and str(value).startswith(MARKER)), value
    assert status in ("returned", "error", "load-refused"), (status, value)
    _witness(snap_rt, tmp_path, keys_dir)


@pytest.mark.parametrize("variant", sorted(READS))
def test_scripts_cannot_read_a_snapshot_their_bundle_did_not_declare(variant: str, tmp_path: Path,
                                                                      keys_dir: Path, snap_rt: Runtime) -> None:
    name = "r-" + "".join(c if c.isalnum() else "-" for c in variant)
    path = build(tmp_path, keys_dir, name, {"features.py": _read_source(READS[variant])}, skip=True,
                 business=name, manifest={"snapshots": ["pop"]})
    status, value = load_and_call(snap_rt, path, SYSTEM, name)
    assert not (status == "returned" and str(value).startswith(MARKER)), value
    assert status in ("returned", "error", "load-refused"), (status, value)


def _plain_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``edge`` module whose snapshots are plain, writable Python and numpy data."""
    data = {"pop": {"score": np.array(SCORES, dtype=np.float32), "emb": np.zeros((8, 4), dtype=np.float32)},
            "stores": {"open": [3, 5], "by_city": {"paris": [1]}}}
    fake = types.ModuleType("edge")
    fake.features = types.SimpleNamespace(get=data.__getitem__, version=lambda name: "1.0.0",  # type: ignore[attr-defined]
                                          available=lambda: tuple(data), declared=("pop",))
    monkeypatch.setitem(sys.modules, "edge", fake)


@pytest.mark.parametrize("variant", ["item assignment", "fill", "ufunc out=", "copyto", "dict assignment",
                                     "list method on a frozen list", "nested dict assignment"])
def test_the_write_harness_reports_a_write_to_writable_data(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _plain_edge(monkeypatch)
    ns: dict = {}
    exec(compile(_write_source(WRITES[variant]), "features.py", "exec"), ns)
    assert ns["entry"]({}).startswith(MARKER)


@pytest.mark.parametrize("variant", ["undeclared name", "through getattr", "rebinding declared"])
def test_the_read_harness_reports_stores_data(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _plain_edge(monkeypatch)
    ns: dict = {}
    exec(compile(_read_source(READS[variant]), "features.py", "exec"), ns)
    assert ns["entry"]({}).startswith(MARKER)
