"""cffi build scripts for native/.

``ops_ffi`` builds ``vm.ml._ops``: the native feature operators (API mode, out of line).
``ort_ffi`` builds ``vm.ml._ort``: ONNX Runtime's C API types and its library's loader (``native/ort/``).
Used by setup.py (``cffi_modules``); ``python build.py`` builds them in place for development.

``build_capi`` builds ``libedgevm.so``: the C API (``native/capi/edgevm.h``, the C files of ``native/capi/``) as a cffi
embedding library whose Python side is ``vm/host/capi.py``, into ``build/capi-<cache tag>-<env>/`` (one per
environment, e.g. ``build/capi-cpython-311-1a2b3c4d``), with an ``edgevm.pc`` for the library where it
is (and ``native/capi/`` for the header) and ``install/edgevm.pc`` for the installed layout. setup.py
runs it after ``build_ext``; a regular install copies the library, ``install/edgevm.pc`` and
``native/capi/edgevm.h`` into the environment's ``lib/``, ``lib/pkgconfig/`` and ``include/``, an
editable one leaves them in ``build/`` (``edgevm capi-flags`` finds either). ``python build.py capi``
builds it for development. cffi's declarations for it are generated from
``native/capi/capi_internal.h`` (``capi_cdefs``), never copied by hand.
"""
from pathlib import Path
from types import ModuleType

from cffi import FFI

ROOT = Path(__file__).resolve().parent
NATIVE = "native"
OPS = f"{NATIVE}/ops"
CAPI = ROOT / NATIVE / "capi"


def _ops_builder(sanitize: str | None = None) -> FFI:
    """The cffi FFI for vm.ml._ops; ``sanitize`` (e.g. ``"address,undefined"``) builds an
    instrumented extension for the fuzz suite (``build_ops_sanitized``), never the installed one."""
    sanitizer = [f"-fsanitize={sanitize}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"] \
        if sanitize else []
    ops = str(ROOT / OPS) if sanitize else OPS  # setup.py wants relative paths; a build elsewhere absolute ones
    ffi = FFI()
    ffi.cdef((ROOT / OPS / "ops.cdef").read_text())
    ffi.set_source(
        "vm.ml._ops",
        '#include "ops.h"',
        sources=[f"{ops}/ops.c"],
        include_dirs=[ops],
        # -fno-trapping-math lets branch-free selects vectorise (no code reads FP exception flags);
        # -ffp-contract=fast allows FMA where the CPU has it (the AVX2/AVX-512 clones of the hot loops),
        # so the last bit of log1p/decay/resize results may differ between CPU generations.
        extra_compile_args=[
            "-O3",
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-fno-strict-aliasing",
            "-fno-trapping-math",
            "-ffp-contract=fast",
            *sanitizer,
        ],
        extra_link_args=sanitizer,
    )
    return ffi


ops_ffi = _ops_builder()

OPS_SANITIZERS = "address,undefined"


def ops_sanitized_dir() -> Path:
    """Where ``build_ops_sanitized`` puts its ``vm/ml/_ops*.so`` for the running interpreter: one
    directory per interpreter and source state, so a rebuild happens only when ops' C changes."""
    import hashlib
    import sys

    digest = hashlib.sha256(OPS_SANITIZERS.encode())
    for f in ("ops.c", "ops.h", "ops.cdef"):
        digest.update((ROOT / OPS / f).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return ROOT / "build" / f"ops-asan-{sys.implementation.cache_tag}-{digest.hexdigest()[:12]}"


def build_ops_sanitized(verbose: bool = False) -> Path:
    """Build vm.ml._ops with -fsanitize=address,undefined into ``ops_sanitized_dir()`` (not over the
    normal build); returns that directory, whose ``vm/ml`` goes first on ``vm.ml.__path__`` to use it."""
    import os
    import shutil
    import tempfile

    out = ops_sanitized_dir()
    if any((out / "vm" / "ml").glob("_ops*.so")):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _ops_builder(OPS_SANITIZERS).compile(tmpdir=str(staging), verbose=verbose)
        try:
            os.rename(staging, out)  # atomic: a concurrent build of the same sources loses the race harmlessly
        except OSError:
            if not any((out / "vm" / "ml").glob("_ops*.so")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


# -- the C API library (libedgevm) ------------------------------------------------------------------

CAPI_LIB = "libedgevm.so"
ZYGOTE_LAUNCHER = "edgevm-zygote"  # the worker zygote's program in an embedding host (native/zygote/)


def capi_build_dir() -> Path:
    """Where ``build_capi`` puts the library for the running interpreter and environment."""
    import hashlib
    import sys

    env = hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]  # one per environment, not just per version
    return ROOT / "build" / f"capi-{sys.implementation.cache_tag}-{env}"

_CAPI_INIT = r"""
import os
import sys

from _edgevm_capi import ffi, lib


def _edgevm_boot():
    # Started without site (PyConfig, native/capi/interpreter.c: sys.path has $EDGEVM_PYTHONPATH and the
    # build's site-packages, for cffi): add exactly what the runtime needs.
    paths = [p for p in os.environ.get("EDGEVM_PYTHONPATH", "").split(os.pathsep) if p]
    here = ffi.string(lib.edgevm__library_path()).decode("utf-8", "surrogateescape")
    if here:
        root = os.path.dirname(os.path.dirname(os.path.abspath(here)))  # <root>/vm/libedgevm.so
        if os.path.isfile(os.path.join(root, "vm", "host", "capi.py")):
            paths.append(root)
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    import site

    for d in BUILD_SITE_DIRS:  # site-packages of the interpreter libedgevm was built with (+ .pth)
        if os.path.isdir(d):
            site.addsitedir(d)
    src = BUILD_SOURCE  # the source tree it was built from, for a runtime that is not installed
    if src and os.path.isfile(os.path.join(src, "vm", "host", "capi.py")) and src not in sys.path:
        sys.path.append(src)
    import vm.host.capi

    vm.host.capi.install(ffi, lib)


try:
    _edgevm_boot()
except BaseException as exc:
    lib.edgevm__init_failed(("cannot start the edgevm runtime: %s: %s (sys.path=%r; "
                             "see EDGEVM_PYTHONPATH in docs/c-api.md)" % (type(exc).__name__, exc, sys.path)
                             ).encode("utf-8", "replace"))

    @ffi.def_extern(name="edgevm__py_init")
    def _edgevm_init_failed(status):
        status[0] = 99
"""


def _c_string(text: str) -> str:
    out = []
    for b in text.encode("utf-8", "surrogateescape"):
        ch = chr(b)
        out.append(ch if 32 <= b < 127 and ch not in '"\\?' else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _capi_exports() -> list[str]:
    import re

    header = (CAPI / "edgevm.h").read_text()
    names = re.findall(r"EDGEVM_API\s+[^;(]*?\b(edgevm_\w+)\s*\(", header)
    if "edgevm_open" not in names:
        raise RuntimeError("native/capi/edgevm.h: no EDGEVM_API declarations found")
    return sorted(set(names))


EMBEDDING_MARKER = "@embedding_api"


def _cdef_text(c: str) -> str:
    """C declarations as cffi's cdef takes them: without comments and preprocessor lines."""
    import re

    c = re.sub(r"/\*.*?\*/|//[^\n]*", " ", c, flags=re.S)
    lines = [line.rstrip() for line in c.splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def capi_cdefs() -> tuple[str, str]:
    """``native/capi/capi_internal.h`` as cffi declarations: (``ffi.cdef``: types and the functions
    implemented in C, ``ffi.embedding_api``: the ``edgevm__py_*`` functions implemented in Python),
    split at the comment that holds ``EMBEDDING_MARKER``."""
    import re

    header = CAPI / "capi_internal.h"
    text = header.read_text()
    if text.count(EMBEDDING_MARKER) != 1:
        raise RuntimeError(f"{header}: expected one comment holding {EMBEDDING_MARKER!r}")
    cut = text.rindex("/*", 0, text.index(EMBEDDING_MARKER))
    cdef, embedding = _cdef_text(text[:cut]), _cdef_text(text[cut:])
    declared = re.compile(r"\b(edgevm__\w+)\s*\(")
    misplaced = [n for n in declared.findall(cdef) if n.startswith("edgevm__py_")]
    misplaced += [n for n in declared.findall(embedding) if not n.startswith("edgevm__py_")]
    if misplaced or not declared.findall(embedding):
        raise RuntimeError(f"{header}: edgevm__py_* functions (implemented in Python) go after the "
                           f"{EMBEDDING_MARKER} comment, all others before it (misplaced: {misplaced})")
    return cdef, embedding


def _capi_builder(gen_dir: Path, sanitize: str | None = None) -> FFI:
    """The cffi embedding FFI for libedgevm; ``gen_dir`` receives generated build inputs."""
    import sys
    import sysconfig

    gen_dir.mkdir(parents=True, exist_ok=True)
    site_dirs: list[str] = []
    for key in ("purelib", "platlib"):
        d = sysconfig.get_paths()[key]
        if d not in site_dirs:
            site_dirs.append(d)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or ""
    (gen_dir / "capi_config.h").write_text(
        "/* generated by build.py */\n"
        f"#define EDGEVM_BUILD_PYTHONHOME {_c_string(sys.base_prefix)}\n"
        f"#define EDGEVM_BUILD_LIBPYTHON {_c_string(soname if '.so' in soname else '')}\n"
        f"#define EDGEVM_BUILD_SITE {_c_string(':'.join(site_dirs))}\n")
    exports = _capi_exports()
    (gen_dir / "edgevm.map").write_text("{\n  global:\n" + "".join(f"    {n};\n" for n in exports)
                                        + "  local:\n    *;\n};\n")
    sanitizer = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"] if sanitize else []
    cdef, embedding = capi_cdefs()
    ffi = FFI()
    ffi.cdef(cdef)
    ffi.embedding_api(embedding)
    ffi.set_source(
        "_edgevm_capi",
        '#include "capi_internal.h"',
        sources=[str(c) for c in sorted(CAPI.glob("*.c"))],  # one file per concern (capi_private.h)
        include_dirs=[str(gen_dir), str(CAPI)],
        library_dirs=[libdir] if libdir else [],
        libraries=["dl", "pthread"],
        extra_compile_args=["-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                            "-Wno-missing-field-initializers", "-fvisibility=hidden", "-pthread", *sanitizer],
        extra_link_args=[f"-Wl,--version-script={gen_dir / 'edgevm.map'}", f"-Wl,-soname,{CAPI_LIB}",
                         *([f"-Wl,-rpath,{libdir}"] if libdir else []), "-pthread", *sanitizer],
    )
    ffi.embedding_init_code(f"BUILD_SITE_DIRS = {site_dirs!r}\nBUILD_SOURCE = {str(ROOT)!r}\n" + _CAPI_INIT)
    return ffi


def _build_launcher(gen_dir: Path, out: Path) -> Path:
    """``edgevm-zygote`` beside libedgevm: a program linking the same libpython, so that an
    embedding host (where sys.executable is the host program) can start worker zygotes."""
    import os
    import shlex
    import subprocess
    import sysconfig

    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[:1]
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    lib = ldlib[3:].split(".so")[0].split(".a")[0] if ldlib.startswith("lib") else f"python{sysconfig.get_python_version()}"
    staging = out / f".{ZYGOTE_LAUNCHER}.{os.getpid()}.tmp"
    subprocess.run([*cc, "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
                    f"-I{gen_dir}", f"-I{CAPI}", f"-I{sysconfig.get_paths()['include']}",
                    str(ROOT / NATIVE / "zygote" / "launcher.c"), "-o", str(staging),
                    *([f"-L{libdir}", f"-Wl,-rpath,{libdir}"] if libdir else []), f"-l{lib}",
                    *shlex.split(sysconfig.get_config_var("LIBS") or ""), "-lm"], check=True)
    dest = out / ZYGOTE_LAUNCHER
    os.replace(staging, dest)
    return dest


def _pkgconfig() -> ModuleType:
    """vm/host/pkgconfig.py, loaded by path (the one template of edgevm.pc, shared with the CLI)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_edgevm_pkgconfig", ROOT / "vm" / "host" / "pkgconfig.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runtime_version() -> str:
    """``vm.__version__``, read without importing vm (as setuptools reads it for pyproject)."""
    import ast

    tree = ast.parse((ROOT / "vm" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("vm/__init__.py: no __version__")


# -- ONNX Runtime's C API (vm.ml._ort) ---------------------------------------------------------------

ORT = f"{NATIVE}/ort"


def _ort_builder() -> FFI:
    """The cffi FFI for vm.ml._ort: ``native/ort/ort.h`` is both its cdef and its C header."""
    ffi = FFI()
    ffi.cdef(_cdef_text((ROOT / ORT / "ort.h").read_text()))
    ffi.set_source("vm.ml._ort", '#include "ort.h"', sources=[f"{ORT}/ort.c"], include_dirs=[ORT],
                   libraries=["dl"], extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"])
    return ffi


ort_ffi = _ort_builder()


def build_capi(out_dir: str | Path | None = None, *, sanitize: str | None = None, verbose: bool = False) -> Path:
    """Build ``libedgevm.so`` (and ``edgevm.pc``, ``install/edgevm.pc``) into ``out_dir`` (default:
    ``capi_build_dir()``); returns the library's path. ``sanitize`` (``"thread"``, ``"address"``)
    builds an instrumented library, for tests only."""
    import os
    import shutil
    import tempfile

    out = Path(out_dir) if out_dir is not None else capi_build_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgevm-capi-") as tmp:
        ffi = _capi_builder(Path(tmp) / "gen", sanitize=sanitize)
        built = Path(ffi.compile(tmpdir=tmp, target="libedgevm.*", verbose=verbose))
        dest = out / CAPI_LIB
        staging = out / f".{CAPI_LIB}.{os.getpid()}.tmp"
        shutil.copyfile(built, staging)
        os.chmod(staging, 0o755)
        os.replace(staging, dest)  # atomic: a process that has the old library mapped keeps it
        _build_launcher(Path(tmp) / "gen", out)
    pc, version = _pkgconfig(), runtime_version()
    (out / "edgevm.pc").write_text(pc.pc_text(version, str(out.resolve()), str(CAPI)))
    (out / "install").mkdir(exist_ok=True)
    (out / "install" / "edgevm.pc").write_text(pc.installed_pc_text(version))  # setup.py's data_files
    return dest


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["capi"]:
        print(build_capi())
    elif sys.argv[1:] == ["ops-sanitized"]:
        print(build_ops_sanitized())
    else:
        ops_ffi.compile(tmpdir=str(ROOT), verbose=False)
        ort_ffi.compile(tmpdir=str(ROOT), verbose=False)
