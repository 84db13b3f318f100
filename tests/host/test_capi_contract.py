"""Facts the C API spells in more than one place, checked against the one place that owns each.

- Error codes: ``vm.errors`` (``OK``, ``ALL_ERRORS``) is the table; ``edgevm.h``'s enum, the name
  table of ``edgevm_errcode_name`` (native/capi/errors.c) and docs/c-api.md's table must say the
  same, and no error class elsewhere may define a code of its own.
- cffi's declarations of libedgevm are generated from ``capi_internal.h`` (build.py: ``capi_cdefs``);
  both sides must implement what it declares.
- ``native/ops/ops.cdef`` is a hand copy of ``ops.h`` with array parameters as ``void *``: everything
  else (names, parameter counts, scalar and return types, typedefs, ``#define`` constants) must match.
- The version: ``vm.__version__``; pyproject.toml reads it, ``EDGEVM_VERSION`` in edgevm.h must equal it
  (and so must what the built library's ``edgevm_version()`` returns: tests/host/test_capi.py).
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import threading
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import vm
import vm.errors
from vm.errors import ALL_ERRORS, OK, EdgeError

ROOT = Path(__file__).resolve().parents[2]
CAPI = ROOT / "native" / "capi"


def builder() -> ModuleType:
    """build.py, loaded as setup.py loads it."""
    spec = importlib.util.spec_from_file_location("_edgevm_build", ROOT / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strip_c_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


def _expected_codes() -> dict[int, str]:
    """Code -> name, from vm.errors."""
    return {OK: "ok", **{cls.code: cls.name for cls in ALL_ERRORS}}


def header_error_enum(header: str) -> dict[str, int]:
    """``EDGEVM_OK``/``EDGEVM_E*`` -> value, from the enum of edgevm.h that holds ``EDGEVM_OK``."""
    text = _strip_c_comments(header)
    blocks = [b for b in re.findall(r"\benum\s*\{([^}]*)\}", text) if re.search(r"\bEDGEVM_OK\b", b)]
    assert len(blocks) == 1, f"expected one enum holding EDGEVM_OK in edgevm.h, found {len(blocks)}"
    enum: dict[str, int] = {}
    for item in filter(None, (i.strip() for i in blocks[0].split(","))):
        m = re.fullmatch(r"(EDGEVM_(?:OK|E[A-Z]+))\s*=\s*(\d+)", item)
        assert m, f"edgevm.h: {item!r} is not 'EDGEVM_E<NAME> = <number>' (codes are spelled out)"
        assert m.group(1) not in enum, f"edgevm.h: {m.group(1)} defined twice"
        enum[m.group(1)] = int(m.group(2))
    return enum


def c_name_table(sources: str) -> dict[str, str]:
    """``EDGEVM_*`` -> name, from the ``case EDGEVM_X: return "name";`` lines of edgevm_errcode_name."""
    m = re.search(r"\bedgevm_errcode_name\s*\(\s*int\s+\w+\s*\)\s*\{(.*?)\n\}", _strip_c_comments(sources), re.S)
    assert m, "edgevm_errcode_name not found in native/capi/*.c"
    body = m.group(1)
    cases = re.findall(r"\bcase\s+(EDGEVM_\w+)\s*:\s*return\s+\"([^\"]*)\"\s*;", body)
    assert len(cases) == len(re.findall(r"\bcase\b", body)), "a case of edgevm_errcode_name is not 'return \"...\";'"
    table: dict[str, str] = {}
    for ident, name in cases:
        assert ident not in table, f"edgevm_errcode_name: {ident} twice"
        table[ident] = name
    assert re.search(r"\bdefault\s*:\s*return\s+\"unknown\"\s*;", body), "edgevm_errcode_name needs a default"
    return table


def _capi_sources() -> str:
    return "\n".join(p.read_text() for p in sorted(CAPI.glob("*.c")))


def test_errors_table_is_complete_and_unique() -> None:
    classes = {obj for _, obj in inspect.getmembers(vm.errors, inspect.isclass)
               if issubclass(obj, EdgeError) and obj is not EdgeError}
    assert classes == set(ALL_ERRORS), "every error class of vm.errors belongs in ALL_ERRORS"
    codes = [OK, *(cls.code for cls in ALL_ERRORS)]
    names = ["ok", *(cls.name for cls in ALL_ERRORS)]
    assert len(set(codes)) == len(codes) and len(set(names)) == len(names)
    assert all(0 < code <= 255 for code in codes[1:]), "codes travel as one byte (edgevm__finish_job)"
    assert all(re.fullmatch(r"[a-z][a-z_]*", name) for name in names)


def test_header_enum_matches_vm_errors() -> None:
    enum = header_error_enum((CAPI / "edgevm.h").read_text())
    by_value: dict[int, str] = {}
    for ident, value in enum.items():
        assert value not in by_value, f"edgevm.h: {ident} and {by_value[value]} are both {value}"
        by_value[value] = ident
    expected = _expected_codes()
    missing = {code: name for code, name in expected.items() if code not in by_value}
    extra = {by_value[v]: v for v in by_value if v not in expected}
    assert not missing, f"vm.errors codes with no EDGEVM_E* constant in edgevm.h: {missing}"
    assert not extra, f"edgevm.h constants with no vm.errors class: {extra}"
    assert enum["EDGEVM_OK"] == OK


def test_c_name_table_matches_header_and_vm_errors() -> None:
    enum = header_error_enum((CAPI / "edgevm.h").read_text())
    table = c_name_table(_capi_sources())
    assert set(table) - set(enum) == set(), f"edgevm_errcode_name names unknown constants: {set(table) - set(enum)}"
    assert set(enum) - set(table) == set(), f"edgevm_errcode_name has no case for {sorted(set(enum) - set(table))}"
    assert {enum[ident]: name for ident, name in table.items()} == _expected_codes()


def test_docs_code_table_matches_vm_errors() -> None:
    """docs/c-api.md's table: the same constants, values and names as edgevm.h and vm.errors."""
    rows = re.findall(r"^\| `(EDGEVM_\w+)` \| (\d+) \| `(\w+)` \| [^|]+ \|$", (ROOT / "docs" / "c-api.md").read_text(), re.M)
    enum = header_error_enum((CAPI / "edgevm.h").read_text())
    assert {ident: int(value) for ident, value, _ in rows} == enum
    assert {int(value): name for _, value, name in rows} == _expected_codes()
    assert len(rows) == len(enum), "a code appears twice in docs/c-api.md"


def test_no_error_class_outside_vm_errors_defines_a_code() -> None:
    """Subclasses elsewhere (PackError, ...) inherit code and name from a vm.errors class."""
    error_names = {cls.__name__ for cls in (EdgeError, *ALL_ERRORS)}
    offenders = []
    for path in sorted((ROOT / "vm").rglob("*.py")):
        if path == ROOT / "vm" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases}
            if not bases & error_names:
                continue
            for stmt in node.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(
                    stmt, ast.AnnAssign) else []
                names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                if names & {"code", "name"}:
                    offenders.append(f"{path.relative_to(ROOT)}:{stmt.lineno}: {node.name} sets {sorted(names)}")
    assert not offenders, "\n".join(offenders)


def test_pack_error_is_a_policy_error() -> None:
    from vm.errors import PolicyError
    from vm.tools.packer import PackError

    assert issubclass(PackError, PolicyError)
    err = PackError("2 policy violation(s)", ["a.py:1:1: x", "a.py:2:1: y"])
    assert (err.code, err.name) == (PolicyError.code, PolicyError.name)
    assert err.problems == ["a.py:1:1: x", "a.py:2:1: y"] and err.detail == {"problems": err.problems}


# -- cffi's declarations: generated from capi_internal.h ------------------------------------------------

def _declared(cdef: str) -> set[str]:
    return set(re.findall(r"\b(edgevm__\w+)\s*\(", cdef))


def test_cdefs_are_generated_from_the_internal_header() -> None:
    assert not list(CAPI.glob("*.cdef")), "libedgevm's cdefs are generated (build.py: capi_cdefs), not copied"
    cdef, embedding = builder().capi_cdefs()
    header = _strip_c_comments((CAPI / "capi_internal.h").read_text())
    assert _declared(cdef) | _declared(embedding) == _declared(header)
    assert _declared(embedding) == {n for n in _declared(header) if n.startswith("edgevm__py_")}
    assert "#" not in cdef + embedding and "/*" not in cdef + embedding


def test_the_c_side_defines_every_c_function_it_declares() -> None:
    cdef, _ = builder().capi_cdefs()
    defined = set(re.findall(r"^INTERNAL\s+[\w\s*]*?\b(edgevm__\w+)\s*\([^;]*?\)\s*\{", _capi_sources(), re.M))
    assert defined == _declared(cdef)


def test_the_python_side_implements_every_python_function_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    """vm.host.capi.install attaches exactly the edgevm__py_* functions capi_internal.h declares."""
    from vm.host import capi

    _, embedding = builder().capi_cdefs()
    attached: list[str] = []

    class FakeFFI:
        NULL = None

        @staticmethod
        def def_extern(name: str) -> Any:
            attached.append(name)
            return lambda fn: fn

        @staticmethod
        def string(value: bytes) -> bytes:
            return value

    class FakeLib:
        @staticmethod
        def edgevm__take_job() -> None:
            return None  # NULL: the dispatcher thread ends at once

        @staticmethod
        def edgevm__library_path() -> bytes:
            return b"/opt/app/lib/libedgevm.so"

    from vm.isolation import supervisor

    monkeypatch.setattr(supervisor, "launcher", None)
    monkeypatch.setattr(capi, "_dispatcher", None)
    monkeypatch.setattr(capi, "_ffi", None)
    monkeypatch.setattr(capi, "_lib", None)
    capi.install(FakeFFI(), FakeLib())
    dispatcher = capi._dispatcher
    assert isinstance(dispatcher, threading.Thread)
    dispatcher.join(5)
    assert not dispatcher.is_alive()
    assert sorted(attached) == sorted(_declared(embedding))
    assert supervisor.launcher == "/opt/app/lib/edgevm-zygote"  # worker zygotes start from beside the library


def test_a_python_function_before_the_marker_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = builder()
    text = (CAPI / "capi_internal.h").read_text()
    moved = "void edgevm__py_close(uint64_t handle, int *status);\n"
    assert moved in text
    bad = tmp_path / "capi"
    bad.mkdir()
    (bad / "capi_internal.h").write_text(text.replace(moved, "").replace("#endif", moved + "#endif")
                                         .replace("edgevm_job_t *edgevm__take_job", moved + "edgevm_job_t *edgevm__take_job"))
    monkeypatch.setattr(build, "CAPI", bad)
    with pytest.raises(RuntimeError, match="misplaced: \\['edgevm__py_close'\\]"):
        build.capi_cdefs()


# -- native/ops: ops.cdef deliberately differs from ops.h (array parameters are void *) --------------------

OPS = ROOT / "native" / "ops"
_STDINT_TYPES = {"int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint16_t", "uint32_t", "uint64_t", "size_t"}
_STDINT = "".join(f"typedef int {t};\n" for t in sorted(_STDINT_TYPES))  # pycparser keeps the names as written


def _ctype(node: Any) -> tuple[bool, str]:
    """(is a pointer, the type as text without the parameter name) of a pycparser type node."""
    from pycparser import c_ast

    if isinstance(node, (c_ast.PtrDecl, c_ast.ArrayDecl)):
        _, inner = _ctype(node.type)
        quals = " ".join(getattr(node, "quals", None) or [])
        return True, f"{inner} *{quals}".rstrip()
    if isinstance(node, c_ast.TypeDecl):
        inner = node.type
        base = " ".join(inner.names) if isinstance(inner, c_ast.IdentifierType) else f"struct {inner.name}"
        return False, " ".join([*(node.quals or []), base])
    raise AssertionError(f"unexpected declarator {type(node).__name__}")


def c_declarations(text: str) -> tuple[dict[str, tuple[str, list[tuple[bool, str]]]], set[str], dict[str, str]]:
    """(function -> (return type, [(is pointer, type)]), typedef names, #define -> value) of a header."""
    from pycparser import CParser, c_ast

    text = _strip_c_comments(text)
    defines = dict(re.findall(r"^\s*#\s*define\s+(\w+)[ \t]+(\S.*?)\s*$", text, re.M))
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    ast_ = CParser().parse(_STDINT + body)
    functions: dict[str, tuple[str, list[tuple[bool, str]]]] = {}
    typedefs: set[str] = set()
    for node in ast_.ext:
        if isinstance(node, c_ast.Typedef):
            typedefs.add(node.name)
        elif isinstance(node, c_ast.Decl) and isinstance(node.type, c_ast.FuncDecl):
            fn = node.type
            params = [] if fn.args is None else [_ctype(p.type) for p in fn.args.params]
            if params == [(False, "void")]:
                params = []
            functions[node.name] = (_ctype(fn.type)[1], params)
    return functions, typedefs - _STDINT_TYPES, defines


def ops_drift(header: str, cdef: str) -> list[str]:
    """How ops.cdef differs from ops.h, beyond array parameters declared ``void *``."""
    h_fns, h_types, h_defs = c_declarations(header)
    c_fns, c_types, c_defs = c_declarations(cdef)
    problems = [f"{n}: only in ops.h" for n in sorted(set(h_fns) - set(c_fns))]
    problems += [f"{n}: only in ops.cdef" for n in sorted(set(c_fns) - set(h_fns))]
    if h_types != c_types:
        problems.append(f"typedefs differ: ops.h {sorted(h_types)}, ops.cdef {sorted(c_types)}")
    if h_defs != c_defs:
        problems.append(f"#define constants differ: {sorted(set(h_defs.items()) ^ set(c_defs.items()))}")
    for name in sorted(set(h_fns) & set(c_fns)):
        (h_ret, h_params), (c_ret, c_params) = h_fns[name], c_fns[name]
        if h_ret != c_ret:
            problems.append(f"{name}: returns {h_ret} in ops.h, {c_ret} in ops.cdef")
        if len(h_params) != len(c_params):
            problems.append(f"{name}: {len(h_params)} parameters in ops.h, {len(c_params)} in ops.cdef")
            continue
        for i, ((h_ptr, h_t), (c_ptr, c_t)) in enumerate(zip(h_params, c_params, strict=True)):
            void = ("const void *" if h_t.startswith("const ") else "void *") if h_ptr else None
            if h_ptr != c_ptr or (h_t != c_t and c_t != void):
                problems.append(f"{name}: parameter {i + 1} is {h_t} in ops.h, {c_t} in ops.cdef")
    return problems


def test_ops_cdef_matches_ops_h() -> None:
    assert ops_drift((OPS / "ops.h").read_text(), (OPS / "ops.cdef").read_text()) == []


def test_ops_drift_is_detected() -> None:
    header, cdef = (OPS / "ops.h").read_text(), (OPS / "ops.cdef").read_text()
    assert "int ops_log1p_f64(const void *x, int64_t n, void *out);" in cdef
    cases = {
        "ops_log1p_f64: parameter 2 is int64_t in ops.h, int32_t in ops.cdef":
            cdef.replace("int ops_log1p_f64(const void *x, int64_t n,", "int ops_log1p_f64(const void *x, int32_t n,"),
        "ops_log1p_f64: 3 parameters in ops.h, 2 in ops.cdef":
            cdef.replace("int ops_log1p_f64(const void *x, int64_t n, void *out)", "int ops_log1p_f64(const void *x, int64_t n)"),
        "ops_log1p_f64: parameter 1 is const double * in ops.h, void * in ops.cdef":
            cdef.replace("int ops_log1p_f64(const void *x,", "int ops_log1p_f64(void *x,"),
        "ops_log1p_f64: returns int in ops.h, int64_t in ops.cdef":
            cdef.replace("int ops_log1p_f64(", "int64_t ops_log1p_f64("),
        "ops_log1p_f64: only in ops.h": cdef.replace("int ops_log1p_f64(const void *x, int64_t n, void *out);", ""),
        "typedefs differ: ops.h ['ops_vocab'], ops.cdef ['ops_other', 'ops_vocab']":
            cdef.replace("typedef struct ops_vocab ops_vocab;", "typedef struct ops_vocab ops_vocab;\n"
                         "typedef struct ops_other ops_other;"),
        "#define constants differ: [('OPS_ETOOBIG', '10'), ('OPS_ETOOBIG', '11')]":
            cdef.replace("#define OPS_ETOOBIG 10", "#define OPS_ETOOBIG 11"),
    }
    for expected, drifted in cases.items():
        assert drifted != cdef, expected
        assert ops_drift(header, drifted) == [expected]


# -- the version ----------------------------------------------------------------------------------------

def header_version(header: str) -> str:
    found = re.findall(r'^#define\s+EDGEVM_VERSION\s+"([^"]*)"', header, re.M)
    assert len(found) == 1, "edgevm.h must define EDGEVM_VERSION once, as a string"
    return found[0]


def test_version_is_written_once() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[.-]?\w+)?", vm.__version__)
    assert header_version((CAPI / "edgevm.h").read_text()) == vm.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vm.__version__"}


def test_installed_metadata_has_the_version() -> None:
    """The installed distribution's version is vm.__version__ (reinstall after changing it)."""
    assert metadata.version("edgevm") == vm.__version__
