"""``vm.tools.packer.check``: pack's checks without keys, refusing what a device's load refuses (an
entry naming a function its module lacks, a script that does not compile, a model ONNX Runtime cannot
load) and accepting every way a module may bind its entry function."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import TARGET

from vm.errors import BadInput, NotFound, PolicyError, ScriptError
from vm.host.runtime import Runtime
from vm.tools.packer import PackError, ScriptSyntaxError, check, pack


def source_dir(root: Path, files: dict[str, str], entries: dict[str, str], **manifest: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (root / "bundle.json").write_text(json.dumps({"name": "chk", "version": "1.0.0", "system": "s",
                                                  "entries": entries, **manifest}))
    return root


BOUND = {
    "defs.py": """
        def entry(inputs):
            return "def"
        """,
    "branches.py": """
        try:
            import edge
        except ImportError:
            edge = None
        if edge is not None:
            def entry(inputs):
                return "if"
        """,
    "assigned.py": """
        def _make(tag):
            def run(inputs):
                return tag
            return run

        entry = _make("assigned")
        """,
    "declared.py": """
        def _install():
            global entry

            def entry(inputs):
                return "global"

        _install()
        """,
    "pkg/__init__.py": """
        from .impl import entry
        """,
    "pkg/impl.py": """
        def entry(inputs):
            return "imported"
        """,
}


def test_every_way_of_binding_an_entry_is_accepted_and_loads(tmp_path: Path, keys_dir: Path) -> None:
    entries = {"def": "defs:entry", "if": "branches:entry", "assigned": "assigned:entry",
               "global": "declared:entry", "imported": "pkg:entry"}
    src = source_dir(tmp_path / "src", BOUND, entries)
    result = check(src, targets=[TARGET])
    assert sorted(result.modules) == ["assigned", "branches", "declared", "defs", "pkg", "pkg.impl"]
    pack(src, keys_dir, tmp_path / "b.evb", targets=[TARGET])
    with Runtime({"keys": keys_dir, "isolation": "thread", "deadline_ms": 5000}) as rt:
        rt.load(tmp_path / "b.evb")
        assert {business: rt.infer("s", business, {}) for business in entries} == {b: b for b in entries}


def test_every_entry_naming_a_missing_function_is_named(tmp_path: Path) -> None:
    src = source_dir(tmp_path / "src", {"features.py": "def entry(inputs):\n    return 1\n\nsize = 3\n",
                                        "pkg/impl.py": "def run(inputs):\n    return 1\n"},
                     {"a": "features:entry", "b": "features:Entry", "c": "pkg:run", "d": "features:helper"})
    with pytest.raises(BadInput) as info:
        check(src, targets=[TARGET])
    assert str(info.value) == (
        "bundle.json: entry 'b' names features:Entry, but features.py defines no 'Entry' at its top level "
        "(did you mean 'entry'?); entry 'c' names pkg:run, but pkg/__init__.py defines no 'run' at its top level; "
        "entry 'd' names features:helper, but features.py defines no 'helper' at its top level")


def test_a_missing_module_is_named_with_the_modules_there_are(tmp_path: Path) -> None:
    src = source_dir(tmp_path / "src", {"features.py": "def entry(inputs):\n    return 1\n"}, {"b": "feature:entry"})
    with pytest.raises(BadInput, match=r"entry 'b' names module 'feature', which is not among the scripts "
                                       r"\(modules: features\)"):
        check(src, targets=[TARGET])


def test_the_function_check_is_skipped_with_the_source_policy_and_load_still_refuses(
        tmp_path: Path, keys_dir: Path) -> None:
    src = source_dir(tmp_path / "src", {"features.py": "def other(inputs):\n    return 1\n"}, {"b": "features:entry"})
    pack(src, keys_dir, tmp_path / "b.evb", targets=[TARGET], skip_source_policy=True)
    with Runtime({"keys": keys_dir, "isolation": "thread"}) as rt, pytest.raises(NotFound, match="no function 'entry'"):
        rt.load(tmp_path / "b.evb")


def test_a_syntax_error_is_a_script_error_listing_file_line_col(tmp_path: Path) -> None:
    src = source_dir(tmp_path / "src", {"features.py": "def entry(inputs):\n    return 1\n",
                                        "a.py": "x = (1,\n", "b.py": "def f()\n    pass\n"},
                     {"b": "features:entry"})
    with pytest.raises(ScriptSyntaxError) as info:
        check(src, targets=[TARGET])
    err = info.value
    assert isinstance(err, ScriptError) and not isinstance(err, PolicyError)
    assert (err.code, err.name) == (ScriptError.code, ScriptError.name)
    assert err.problems == ["a.py:1:5: syntax error: '(' was never closed", "b.py:1:8: syntax error: expected ':'"]
    assert str(err).splitlines()[0] == "2 script(s) do not compile under CPython 3.11"


def test_policy_violations_are_still_a_pack_error(tmp_path: Path) -> None:
    src = source_dir(tmp_path / "src", {"features.py": "import os\n\ndef entry(inputs):\n    return 1\n"},
                     {"b": "features:entry"})
    with pytest.raises(PackError) as info:
        check(src, targets=[TARGET])
    assert info.value.problems[0].startswith("features.py:1:1: import of 'os' is not allowed")


def test_a_model_onnx_runtime_cannot_load_is_refused_before_anything_is_written(
        tmp_path: Path, keys_dir: Path) -> None:
    src = source_dir(tmp_path / "src", {"features.py": "def entry(inputs):\n    return 1\n"},
                     {"b": "features:entry"}, models={"m": "m.onnx"})
    (src / "m.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(BadInput, match="model 'm': ONNX Runtime cannot load it"):
        check(src, targets=[TARGET])
    with pytest.raises(BadInput, match="model 'm'"):
        pack(src, keys_dir, tmp_path / "m.evb", targets=[TARGET])
    assert not (tmp_path / "m.evb").exists()
    (src / "m.onnx").unlink()
    with pytest.raises(NotFound, match="model 'm'"):
        check(src, targets=[TARGET])
