"""The C API (native/capi/edgevm.h, libedgevm) proven by a real native host: tests/host/host.c, compiled
with gcc and the flags ``edgevm capi-flags`` prints, linked against libedgevm like an app.

The host checks its results against the Python API's (computed here, byte for byte), runs 4
threads at once, tracks events, exercises misuse, a stuck script and every close path; one run
goes under valgrind (memcheck with leak checking), failing on any error or leak in edgevm's own C
code or the host's (CPython's own reports are not ours to fix and are ignored).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import msgpack
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "host"))

import hostbuild  # noqa: E402

import vm  # noqa: E402
from vm.errors import Internal  # noqa: E402
from vm.host import capi  # noqa: E402

CAPI_SOURCES = {p.name for p in (ROOT / "native" / "capi").glob("*.c")}  # libedgevm's own C code
needs_gcc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "gcc")) is None, reason="needs a C compiler")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> hostbuild.Scenario:
    return hostbuild.prepare(tmp_path_factory.mktemp("capi"))


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("needs a C compiler")
    return hostbuild.build_host(tmp_path_factory.mktemp("host") / "host")


def _run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _summary(out: str) -> tuple[int, int]:
    m = re.search(r"^host: (\d+) passed, (\d+) failed$", out, re.M)
    assert m, out[-3000:]
    return int(m.group(1)), int(m.group(2))


# -- the library itself ------------------------------------------------------------------------------

def test_library_exports_only_the_public_api() -> None:
    lib = hostbuild.library()
    header = (ROOT / "native" / "capi" / "edgevm.h").read_text()
    declared = set(re.findall(r"EDGEVM_API\s+[^;(]*?\b(edgevm_\w+)\s*\(", header))
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("needs nm")
    out = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert exported == declared
    assert {"edgevm_open", "edgevm_infer", "edgevm_infer_async", "edgevm_track", "edgevm_errmsg", "edgevm_free",
            "edgevm_close", "edgevm_set_listener", "edgevm_metrics"} <= exported


def test_capi_flags_and_pkg_config() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lib = hostbuild.library()
    flags = subprocess.run([sys.executable, "-m", "vm.host.cli", "capi-flags"], capture_output=True, text=True,
                           env=env, check=True).stdout.split()
    assert f"-L{lib.parent}" in flags and f"-Wl,-rpath,{lib.parent}" in flags and "-ledgevm" in flags
    include = Path(next(f for f in flags if f.startswith("-I"))[2:])
    assert (include / "edgevm.h").read_text() == (ROOT / "native" / "capi" / "edgevm.h").read_text()
    pc = subprocess.run([sys.executable, "-m", "vm.host.cli", "capi-flags", "--pkg-config"], capture_output=True,
                        text=True, env=env, check=True).stdout
    assert pc == (lib.parent / "edgevm.pc").read_text()  # the same file build.py wrote next to the library


def _pc_fields(pc_dir: Path, how: str) -> tuple[str, list[str]]:
    """(Version, the Cflags and Libs flags) of ``pc_dir/edgevm.pc``: through pkg-config, or by
    expanding its variables here (``${pcfiledir}`` included) as pkg-config does."""
    if how == "pkg-config":
        if shutil.which("pkg-config") is None:
            pytest.skip("needs pkg-config")
        env = {**os.environ, "PKG_CONFIG_LIBDIR": str(pc_dir), "PKG_CONFIG_PATH": ""}  # only this edgevm.pc

        def run(*args: str) -> str:
            return subprocess.run(["pkg-config", *args, "edgevm"], capture_output=True, text=True, env=env,
                                  check=True).stdout

        return run("--modversion").strip(), run("--cflags", "--libs").split()
    values = {"pcfiledir": str(pc_dir)}
    fields = {}
    for line in (pc_dir / "edgevm.pc").read_text().splitlines():
        m = re.fullmatch(r"(\w+)\s*([=:])\s*(.*)", line)
        if m:
            value = re.sub(r"\$\{(\w+)\}", lambda v: values[v.group(1)], m.group(3))
            (values if m.group(2) == "=" else fields)[m.group(1)] = value
    return fields["Version"], [*fields["Cflags"].split(), *fields["Libs"].split()]


def _check_pc(pc_dir: Path, how: str, *, libdir: Path, includedir: Path) -> None:
    version, flags = _pc_fields(pc_dir, how)
    assert version == vm.__version__
    inc = [Path(f[2:]) for f in flags if f.startswith("-I")]
    lib = [Path(f[2:]) for f in flags if f.startswith("-L")]
    rpath = [Path(f.removeprefix("-Wl,-rpath,")) for f in flags if f.startswith("-Wl,-rpath,")]
    assert "-ledgevm" in flags and len(inc) == len(lib) == len(rpath) == 1, flags
    assert inc[0].resolve() == includedir.resolve() and (inc[0] / "edgevm.h").is_file()
    assert lib[0].resolve() == rpath[0].resolve() == libdir.resolve() and (lib[0] / "libedgevm.so").is_file()


@pytest.mark.parametrize("how", ["pkg-config", "parsed"])
def test_pkg_config_file_of_the_build_dir(how: str) -> None:
    """build/capi-*/edgevm.pc: the library beside it, the header in native/capi/."""
    lib = hostbuild.library()
    _check_pc(lib.parent, how, libdir=lib.parent, includedir=ROOT / "native" / "capi")


@pytest.mark.parametrize("how", ["pkg-config", "parsed"])
def test_installed_pkg_config_file_is_relocatable(tmp_path: Path, how: str) -> None:
    """build/capi-*/install/edgevm.pc, installed (setup.py's data_files) as <prefix>/lib/pkgconfig/edgevm.pc
    beside <prefix>/lib/libedgevm.so and <prefix>/include/edgevm.h, finds them wherever <prefix> is."""
    lib = hostbuild.library()
    prefix = tmp_path / "prefix"
    (prefix / "lib" / "pkgconfig").mkdir(parents=True)
    (prefix / "include").mkdir()
    shutil.copyfile(lib.parent / "install" / "edgevm.pc", prefix / "lib" / "pkgconfig" / "edgevm.pc")
    shutil.copyfile(lib, prefix / "lib" / "libedgevm.so")
    shutil.copyfile(ROOT / "native" / "capi" / "edgevm.h", prefix / "include" / "edgevm.h")
    _check_pc(prefix / "lib" / "pkgconfig", how, libdir=prefix / "lib", includedir=prefix / "include")
    setup = (ROOT / "setup.py").read_text()
    assert '("lib/pkgconfig", [f"{CAPI_DIR}/install/edgevm.pc"])' in setup


# -- the host scenario ---------------------------------------------------------------------------------

@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_host_scenario(host: Path, scenario: hostbuild.Scenario, isolation: str) -> None:
    """Everything, at full speed, in both isolation modes: results equal the Python API's, 4 threads,
    misuse, stuck script, close."""
    proc = _run([str(host), *scenario.host_args(), "--threads", "4", "--iters", "25", "--isolation", isolation])
    passed, failed = _summary(proc.stdout)
    assert proc.returncode == 0 and failed == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert passed > 400
    for section in ("[infer]", "[threads]", "[events]", "[stuck]", "[close]", "[race]", "[misuse]"):
        assert section in proc.stdout
    assert "6/6 results byte-identical to the Python API's" in proc.stdout
    assert f"edgevm C host: libedgevm {vm.__version__}," in proc.stdout  # edgevm_version() of the built library


def test_host_under_valgrind(host: Path, scenario: hostbuild.Scenario, tmp_path: Path) -> None:
    """The scenario (minus the seconds-long stuck script) under memcheck: no invalid access, no use of
    uninitialised memory and no leak whose innermost non-libc frame is in native/capi/*.c or host.c."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    xml = tmp_path / "memcheck.xml"
    proc = _run([valgrind, "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite,indirect",
                 "--errors-for-leak-kinds=definite,indirect", "--num-callers=40", "--xml=yes",
                 f"--xml-file={xml}", f"--log-file={tmp_path / 'memcheck.log'}",
                 str(host), *scenario.host_args(), "--no-stuck", "--iters", "4", "--deadline-ms", "10000",
                 "--isolation", "thread"],
                env={"PYTHONMALLOC": "malloc"}, timeout=300)
    passed, failed = _summary(proc.stdout)
    assert proc.returncode == 0 and failed == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    ours = memcheck_errors_in(xml, {*CAPI_SOURCES, "host.c"})
    assert not ours, "\n\n".join(ours[:10])


def test_host_under_thread_sanitizer(scenario: hostbuild.Scenario, tmp_path: Path) -> None:
    """Library and host built with -fsanitize=thread: no data race between edgevm's C threads, the
    host's and the runtime's (CPython itself is not instrumented)."""
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("needs a C compiler")
    try:
        host = hostbuild.build_host(tmp_path / "host", sanitize="thread")
    except Exception as exc:  # noqa: BLE001 - e.g. no libtsan on this machine
        pytest.skip(f"cannot build with -fsanitize=thread: {exc}")
    proc = _run([str(host), *scenario.host_args(), "--no-stuck", "--iters", "10", "--deadline-ms", "10000",
                 "--isolation", "thread"],
                env={"EDGEVM_PYTHONPATH": str(ROOT), "TSAN_OPTIONS": "halt_on_error=0 report_signal_unsafe=0"},
                timeout=300)
    passed, failed = _summary(proc.stdout)
    assert proc.returncode == 0 and failed == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "ThreadSanitizer" not in proc.stderr, proc.stderr[-6000:]


def memcheck_errors_in(xml: Path, files: set[str]) -> list[str]:
    """memcheck errors whose innermost frame outside libc/valgrind/ld.so is in one of ``files``
    (for a leak: the code that called the allocator)."""
    root = ET.parse(xml).getroot()
    states = [s.findtext("state") for s in root.findall("status")]
    assert states and states[-1] == "FINISHED", f"memcheck did not finish: {states}"
    found = []
    for err in root.iter("error"):
        stack = err.find("stack")
        frames = [(f.findtext("fn") or "?", f.findtext("file") or "", f.findtext("line") or "",
                   f.findtext("obj") or "") for f in (stack.iter("frame") if stack is not None else [])]
        first = next((f for f in frames if not re.search(r"vgpreload|/libc\.so|/ld-linux", f[3])), None)
        if first is not None and first[1] in files:
            what = err.findtext("xwhat/text") or err.findtext("what") or ""
            found.append(f"{err.findtext('kind')}: {what}\n" + "\n".join(
                f"    {fn} ({fi}:{ln})" for fn, fi, ln, _ in frames[:12]))
    return found


# -- start-up failures are error codes, not crashes ------------------------------------------------------

INIT_PROBE = r"""
#include <stdio.h>
#include <string.h>
#include "edgevm.h"
int main(void) {
    edgevm_t *vm = (edgevm_t *)1;
    int rc1 = edgevm_open("{\"keys\": \"/nonexistent\"}", &vm);
    char first[1024];
    snprintf(first, sizeof first, "%s", edgevm_errmsg(NULL));
    int rc2 = edgevm_open("{\"keys\": \"/nonexistent\"}", &vm);
    uint8_t *out; size_t n;
    int rc3 = edgevm_infer(vm, "a", "b", (const uint8_t *)"\x80", 1, &out, &n);
    printf("%d %d %d %s\n%s\n", rc1, rc2, rc3, vm == NULL ? "null" : "set", first);
    return 0;
}
"""


@needs_gcc
@pytest.mark.parametrize("breakage", ["home", "package"])
def test_failed_start_is_einternal(tmp_path: Path, breakage: str) -> None:
    """An interpreter that cannot start (bad home) or a runtime that cannot be imported gives
    EDGEVM_EINTERNAL with the reason, on every call; never a crash and never EDGEVM_OK."""
    hostbuild.library()
    src = tmp_path / "probe.c"
    src.write_text(INIT_PROBE)
    exe = tmp_path / "probe"
    subprocess.run(["gcc", "-std=c11", "-Wall", str(src), "-o", str(exe), *hostbuild.capi_flags()], check=True)
    if breakage == "home":
        env = {"EDGEVM_PYTHONHOME": str(tmp_path / "no-python-here")}
    else:
        fake = tmp_path / "fake" / "vm"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("raise ImportError('this vm package is broken on purpose')\n")
        env = {"EDGEVM_PYTHONPATH": str(tmp_path / "fake")}
    proc = _run([str(exe)], env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    codes, message = proc.stdout.splitlines()[0], proc.stdout.splitlines()[1]
    assert codes == "99 99 1 null", proc.stdout
    assert "could not start" in message
    if breakage == "package":
        assert "broken on purpose" in message


FIRST_OPEN_RACE = r"""
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "edgevm.h"
static const char *config, *bundle;
static const uint8_t in[] = {0x83, 0xa3, 'n', 'o', 'w', 0x00, 0xa6, 'e', 'v', 'e', 'n', 't', 's', 0x90,
                             0xaa, 'c', 'a', 'n', 'd', 'i', 'd', 'a', 't', 'e', 's', 0x90};
static int results[8];
static void *run(void *arg) {
    int i = (int)(long)arg, rc;
    edgevm_t *vm = NULL;
    uint8_t *out = NULL;
    size_t n = 0;
    rc = edgevm_open(config, &vm);
    if (rc == EDGEVM_OK) rc = edgevm_load_file(vm, bundle);
    if (rc == EDGEVM_OK) rc = edgevm_infer(vm, "home", "rank", in, sizeof in, &out, &n);
    edgevm_free(out);
    if (vm != NULL && edgevm_close(vm) != EDGEVM_OK) rc = -1;
    if (rc != EDGEVM_OK) fprintf(stderr, "thread %d: %d %s\n", i, rc, edgevm_errmsg(NULL));
    results[i] = rc;
    return NULL;
}
int main(int argc, char **argv) {
    pthread_t t[8];
    config = argv[1], bundle = argv[2];
    for (long i = 0; i < 8; i++) pthread_create(&t[i], NULL, run, (void *)i);
    int bad = 0;
    for (int i = 0; i < 8; i++) { pthread_join(t[i], NULL); bad += results[i] != 0; }
    printf("%d of 8 failed\n", bad);
    return bad != 0;
}
"""


@needs_gcc
def test_first_calls_race(tmp_path: Path, scenario: hostbuild.Scenario) -> None:
    """Eight threads make the process's very first edgevm calls at once (the interpreter starts
    once), each with its own handle: open, load, infer, close."""
    hostbuild.library()
    src = tmp_path / "race.c"
    src.write_text(FIRST_OPEN_RACE)
    exe = tmp_path / "race"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-pthread", str(src), "-o", str(exe),
                    *hostbuild.capi_flags()], check=True)
    config = json.dumps({"keys": str(scenario.keys), "deadline_ms": 5000})
    proc = _run([str(exe), config, str(scenario.bundle)], timeout=120)
    assert proc.returncode == 0 and "0 of 8 failed" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_header_compiles_as_cxx_and_strict_c(tmp_path: Path) -> None:
    src = tmp_path / "h.c"
    src.write_text('#include "edgevm.h"\nint main(void) { edgevm_t *vm = 0; return edgevm_open("{}", &vm) == EDGEVM_OK && edgevm_errmsg(vm) != 0; }\n')
    inc = f"-I{ROOT / 'native' / 'capi'}"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-c", inc, str(src), "-o",
                    str(tmp_path / "h.o")], check=True)
    cxx = tmp_path / "h.cpp"
    cxx.write_text(src.read_text())
    subprocess.run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-c", inc, str(cxx), "-o",
                    str(tmp_path / "hpp.o")], check=True)


# -- the Python side, without C --------------------------------------------------------------------------

def test_pack_event_embeds_the_result() -> None:
    result = msgpack.packb({"sku": 7, "score": 0.5})
    data = capi.pack_event({"task_id": 3, "task_name": "ClickTask", "status": 0, "error": None, "result": result})
    assert msgpack.unpackb(data) == {"task_id": 3, "task_name": "ClickTask", "status": 0, "error": None,
                                     "result": {"sku": 7, "score": 0.5}}
    failed = capi.pack_event({"task_id": 4, "status": 6, "error": "boom", "result": None})
    assert msgpack.unpackb(failed)["result"] is None


def test_reply_finishes_a_job_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class FakeLib:
        @staticmethod
        def edgevm__finish_job(job, status, data, length):  # noqa: ANN001, ANN205
            calls.append((job, status, data, length))

    monkeypatch.setattr(capi, "_lib", FakeLib)
    reply = capi._Reply("job-1")
    reply(0, b"\x80")
    reply(6, "again")  # a second answer is ignored
    assert calls == [("job-1", 0, b"\x80", 1)]
    calls.clear()
    capi._Reply("job-2")(6, "features.py:3: ValueError: no")
    capi._Reply("job-3")(0, None)  # not bytes: an internal error, never a crash
    capi._Reply("job-4")(9, b"")  # an error without a message gets one
    assert calls[0] == ("job-2", 6, b"features.py:3: ValueError: no", 29)
    assert calls[1][1] == Internal.code and calls[2][1] == 9 and calls[2][2]
