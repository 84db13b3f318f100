"""The command-line contract: keygen, check, pack, inspect, run — spellings, exit codes, output, and
that no secret is ever printed."""
from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TARGET

ROOT = Path(__file__).resolve().parents[2]


def edgevm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vm.host.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          input=stdin, timeout=300)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "keys"
    proc = edgevm("keygen", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def secrets(keys: Path) -> list[str]:
    """Every secret in the key directory, in the spellings a leak could take."""
    found = []
    for name in ("signing.key", "open.key"):
        doc = json.loads((keys / name).read_text())
        b64 = doc.get("seed") or doc.get("key")
        found += [b64, base64.b64decode(b64).hex()]
    return found


def write_src(root: Path, script: str, **manifest) -> Path:
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "features.py").write_text(script)
    (src / "bundle.json").write_text(json.dumps({"name": "cli", "version": "1.0.0", "system": "s",
                                                 "entries": {"b": "features:entry"}, **manifest}))
    return src


def test_keygen_writes_secrets_0600_and_ids(keys: Path) -> None:
    for name in ("signing.key", "open.key", "device.json"):
        assert stat.S_IMODE(os.stat(keys / name).st_mode) == 0o600, name
    for name in ("verify.pub", "seal.pub"):
        doc = json.loads((keys / name).read_text())
        assert len(bytes.fromhex(doc["key_id"])) == 8


def test_keygen_refuses_to_replace_keys_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    assert edgevm("keygen", "--out", str(out)).returncode == 0
    old = {name: json.loads((out / name).read_text())["key_id"] for name in ("verify.pub", "seal.pub")}
    old_secrets = [json.loads((out / "signing.key").read_text())["seed"], json.loads((out / "open.key").read_text())["key"]]
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    again = edgevm("keygen", "--out", str(out))
    assert again.returncode != 0 and again.stdout == ""
    assert again.stderr.startswith("error[bad_input/1]") and again.stderr.strip().count("\n") == 0
    assert f"sign key id {old['verify.pub']}" in again.stderr and f"seal key id {old['seal.pub']}" in again.stderr
    assert "--force" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    (out / "open.key").chmod(0o644)  # a secret file someone loosened
    forced = edgevm("keygen", "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    replaced = [line for line in forced.stdout.splitlines() if line.startswith("replaced")]
    assert len(replaced) == 1
    assert f"sign key id {old['verify.pub']}" in replaced[0] and f"seal key id {old['seal.pub']}" in replaced[0]
    new = {name: json.loads((out / name).read_text())["key_id"] for name in ("verify.pub", "seal.pub")}
    assert new["verify.pub"] != old["verify.pub"] and new["seal.pub"] != old["seal.pub"]
    for name in ("signing.key", "open.key", "device.json"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o600, name
    for text in (again.stdout, again.stderr, forced.stdout, forced.stderr):
        assert not any(secret in text for secret in old_secrets)


def test_pack_inspect_run(tmp_path: Path, keys: Path, secrets: list[str]) -> None:
    src = write_src(tmp_path, "def entry(inputs):\n    return {'y': inputs['x'] * 2}\n")
    out = tmp_path / "b.evb"
    proc = edgevm("pack", str(src), "--keys", str(keys), "-o", str(out), "--target", TARGET)
    assert proc.returncode == 0, proc.stderr
    assert "packed" in proc.stdout

    bare = edgevm("inspect", str(out))
    assert bare.returncode == 0
    info = json.loads(bare.stdout)
    assert info["signature"].startswith("not checked")
    assert info["header_unverified"]["name"] == "cli"
    full = edgevm("inspect", str(out), "--keys", str(keys))
    info = json.loads(full.stdout)
    assert info["signature"] == "valid"
    assert info["contents"]["modules"]["features"]["file"] == "features.py"
    for text in (bare.stdout, full.stdout, proc.stdout, proc.stderr):
        assert not any(secret in text for secret in secrets)

    (tmp_path / "in.json").write_text('{"x": 21}')
    run = edgevm("run", str(out), "--keys", str(keys), "--system", "s", "--business", "b",
                 "--input", str(tmp_path / "in.json"))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"y": 42}

    import msgpack

    (tmp_path / "in.msgpack").write_bytes(msgpack.packb({"x": 5}))
    run = edgevm("run", str(out), "--keys", str(keys), "--system", "s", "--business", "b",
                 "--input", str(tmp_path / "in.msgpack"))
    assert json.loads(run.stdout) == {"y": 10}


def test_pack_reports_every_violation_with_file_line_col(tmp_path: Path, keys: Path) -> None:
    src = write_src(tmp_path, "import os\n\ndef entry(inputs):\n    return inputs.__dict__\n")
    proc = edgevm("pack", str(src), "--keys", str(keys), "-o", str(tmp_path / "x.evb"), "--target", TARGET)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert any(line.startswith("features.py:1:1: import of 'os'") for line in lines), lines
    assert any(line.startswith("features.py:4:12: attribute '__dict__'") for line in lines), lines
    assert not (tmp_path / "x.evb").exists()


def test_run_failure_is_one_line_with_code(tmp_path: Path, keys: Path) -> None:
    src = write_src(tmp_path, "def entry(inputs):\n    return inputs['missing']\n")
    out = tmp_path / "b.evb"
    assert edgevm("pack", str(src), "--keys", str(keys), "-o", str(out), "--target", TARGET).returncode == 0
    (tmp_path / "in.json").write_text("{}")
    run = edgevm("run", str(out), "--keys", str(keys), "--system", "s", "--business", "b",
                 "--input", str(tmp_path / "in.json"))
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0
    assert run.stderr.startswith("error[script/6]: features.py:2: KeyError")
    wrong = edgevm("run", str(out), "--keys", str(keys), "--system", "s", "--business", "nope",
                   "--input", str(tmp_path / "in.json"))
    assert wrong.stderr.startswith("error[not_found/8]")


@pytest.mark.parametrize("source, code", [
    ("def entry(inputs):\n    return {'y': inputs['x'] * 2}\n", 0),
    ("def entry(inputs):\n    return 1 / 0\n", 16),
    ("def entry(inputs):\n    it = iter([1])\n    for _ in range(200_000):\n"
     "        it = map(abs, it)\n    return next(it)\n", 1),
])
def test_run_gives_the_same_answer_in_both_isolation_modes(tmp_path: Path, keys: Path, source: str, code: int) -> None:
    src = write_src(tmp_path, source)
    out = tmp_path / "b.evb"
    assert edgevm("pack", str(src), "--keys", str(keys), "-o", str(out), "--target", TARGET).returncode == 0
    (tmp_path / "in.json").write_text('{"x": 21}')
    runs = {mode: edgevm("run", str(out), "--keys", str(keys), "--system", "s", "--business", "b", "--input",
                         str(tmp_path / "in.json"), "--isolation", mode, "--deadline-ms", "5000")
            for mode in ("process", "thread")}
    process, thread = runs["process"], runs["thread"]
    if "map(abs" in source:  # a segfault: a typed error in process mode; in thread mode it takes the CLI down
        assert process.returncode == 24 and process.stderr.startswith("error[crashed/14]"), process.stderr
        assert thread.returncode < 0 or thread.returncode == 139
        return
    assert process.returncode == thread.returncode == code
    assert process.stdout == thread.stdout and process.stderr == thread.stderr


def test_run_with_wrong_keys_is_a_signature_error(tmp_path: Path, keys: Path) -> None:
    src = write_src(tmp_path, "def entry(inputs):\n    return 1\n")
    out = tmp_path / "b.evb"
    assert edgevm("pack", str(src), "--keys", str(keys), "-o", str(out), "--target", TARGET).returncode == 0
    other = tmp_path / "other"
    assert edgevm("keygen", "--out", str(other)).returncode == 0
    (tmp_path / "in.json").write_text("{}")
    run = edgevm("run", str(out), "--keys", str(other), "--system", "s", "--business", "b",
                 "--input", str(tmp_path / "in.json"))
    assert run.returncode == 12 and run.stderr.startswith("error[signature/2]")
    bad = edgevm("inspect", str(out), "--keys", str(other))
    assert bad.stderr.startswith("error[signature/2]")


def test_unsafe_skip_is_explicit_and_warned(tmp_path: Path, keys: Path) -> None:
    src = write_src(tmp_path, "def entry(inputs):\n    return inputs.__dict__\n")
    out = tmp_path / "b.evb"
    proc = edgevm("pack", str(src), "--keys", str(keys), "-o", str(out), "--target", TARGET,
                  "--unsafe-skip-source-policy")
    assert proc.returncode == 0 and "WARNING" in proc.stderr
    (tmp_path / "in.json").write_text("{}")
    run = edgevm("run", str(out), "--keys", str(keys), "--system", "s", "--business", "b",
                 "--input", str(tmp_path / "in.json"))
    assert run.stderr.startswith("error[policy/5]") and "__dict__" in run.stderr


def test_bad_manifest(tmp_path: Path, keys: Path) -> None:
    src = write_src(tmp_path, "def entry(inputs):\n    return 1\n", version="one")
    proc = edgevm("pack", str(src), "--keys", str(keys), "-o", str(tmp_path / "x.evb"))
    assert proc.returncode != 0 and proc.stderr.startswith("error[bad_input/1]") and "version" in proc.stderr


# -- --version and exit status --------------------------------------------------------------------

def test_version_names_runtime_format_python_and_libraries_without_importing_them() -> None:
    import importlib.metadata
    import importlib.util
    import platform

    import vm
    from vm.bundle.format import FORMAT_VERSION

    proc = edgevm("--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == [f"edgevm {vm.__version__}", f"bundle format {FORMAT_VERSION}",
                         f"CPython {platform.python_version()} (bytecode magic {importlib.util.MAGIC_NUMBER.hex()})"]
    assert lines[3:] == [f"numpy {importlib.metadata.version('numpy')}",
                         f"onnxruntime {importlib.metadata.version('onnxruntime')}"]
    probe = subprocess.run([sys.executable, "-c", "import sys\nfrom vm.host import cli\ntry:\n    cli.main(['--version'])\n"
                            "except SystemExit:\n    pass\nprint(sorted({'numpy', 'onnxruntime'} & set(sys.modules)))"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.stdout.splitlines()[-1] == "[]", probe.stdout + probe.stderr


def test_version_says_when_a_package_has_no_metadata(tmp_path: Path) -> None:
    """A stripped device image ships numpy without its dist-info: installed, version unknown."""
    import site

    (packages := tmp_path / "site").mkdir()
    for entry in Path(site.getsitepackages()[0]).iterdir():
        if not (entry.name.startswith("numpy-") and entry.name.endswith(".dist-info")):
            (packages / entry.name).symlink_to(entry)
    code = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(packages)!r}]; from vm.host.cli import version_text; " \
           "print(version_text())"
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[3] == "numpy: installed without its metadata (version unknown)"


def test_exit_status_is_10_plus_the_error_code_and_help_lists_every_one() -> None:
    from vm.errors import ALL_ERRORS
    from vm.host.cli import exit_code, exit_codes

    table = exit_codes()
    assert len({status for status, _, _ in table}) == len(table)
    assert {name: status for status, name, _ in table if status >= 10} == {
        cls.name: 10 + cls.code for cls in ALL_ERRORS}
    assert all(exit_code(cls) < 126 for cls in ALL_ERRORS)  # 126+ are the shell's
    for command in ([], ["run"], ["pack"], ["check"]):
        text = edgevm(*command, "--help").stdout
        for status, name, _ in table:
            assert any(line.split()[:2] == [str(status), name] for line in text.splitlines()), (command, name)


def test_docs_exit_status_table_is_the_cli_table() -> None:
    import re

    from vm.host.cli import exit_codes

    rows = re.findall(r"^\| (\d+) \| `([\w-]+)` \| ([^|]+) \|$", (ROOT / "docs" / "cli.md").read_text(), re.M)
    assert [(int(s), n) for s, n, _ in rows] == [(s, n) for s, n, _ in exit_codes()]


# -- check: pack's checks, no keys, nothing written -------------------------------------------------

def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_check_accepts_what_pack_accepts_without_keys_and_writes_nothing(tmp_path: Path) -> None:
    src = write_src(tmp_path, "def entry(inputs):\n    return 1\n")
    before = tree(tmp_path)
    proc = edgevm("check", str(src), "--target", TARGET)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: cli 1.0.0: entries b; modules features;") and TARGET in proc.stdout
    assert tree(tmp_path) == before


def test_check_and_pack_refuse_an_entry_naming_a_missing_function(tmp_path: Path, keys: Path) -> None:
    src = write_src(tmp_path, "def entry(inputs):\n    return 1\n\nhelper = 3\n",
                    entries={"b": "features:entri", "c": "features:entry"})
    expected = ("error[bad_input/1]: bundle.json: entry 'b' names features:entri, but features.py defines no "
                "'entri' at its top level (did you mean 'entry'?)\n")
    check = edgevm("check", str(src), "--target", TARGET)
    assert (check.returncode, check.stdout, check.stderr) == (11, "", expected)
    pack = edgevm("pack", str(src), "--keys", str(keys), "-o", str(tmp_path / "x.evb"), "--target", TARGET)
    assert (pack.returncode, pack.stderr) == (11, expected)
    assert not (tmp_path / "x.evb").exists()


def test_a_syntax_error_is_a_script_error_with_file_line_col_not_a_policy_error(tmp_path: Path, keys: Path) -> None:
    src = write_src(tmp_path, "import os\n\ndef entry(inputs:\n    return 1\n")
    for args in (["check", str(src)], ["pack", str(src), "--keys", str(keys), "-o", str(tmp_path / "x.evb")]):
        proc = edgevm(*args, "--target", TARGET)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 16, proc.stderr
        assert lines[0] == "features.py:3:10: syntax error: '(' was never closed"
        assert lines[1].startswith("error[script/6]: 1 script(s) do not compile under CPython 3.11")
        assert len(lines) == 2
    assert not (tmp_path / "x.evb").exists()
    (src / "features.py").write_text("import os\n\ndef entry(inputs):\n    return 1\n")
    policy = edgevm("check", str(src), "--target", TARGET)
    assert policy.returncode == 15 and policy.stderr.splitlines()[-1].startswith("error[policy/5]")


def test_a_refused_import_names_the_modules_scripts_may_import(tmp_path: Path) -> None:
    from vm.policy.rules import ALLOWED_IMPORTS

    src = write_src(tmp_path, "import maths\n\ndef entry(inputs):\n    return 1\n")
    proc = edgevm("check", str(src), "--target", TARGET)
    first = proc.stderr.splitlines()[0]
    assert first.startswith("features.py:1:1: import of 'maths' is not allowed (did you mean 'math'?); "
                            "scripts may import "), first
    allowed = first.split("scripts may import ")[1].removesuffix(" and the bundle's own modules").split(", ")
    assert allowed == sorted(ALLOWED_IMPORTS)


# -- run: output, defaults, config, metrics, latency, errors by class --------------------------------

RUN_SCRIPT = """
import edge


def entry(inputs):
    print("printed", inputs.get("x"))
    edge.log("logged by", edge.bundle_name)
    mode = inputs.get("mode")
    if mode == "spin":
        while True:
            pass
    if mode == "memory":
        return len(bytearray(64 << 20))
    return {"remaining_ms": edge.remaining_ms()}
"""


@pytest.fixture(scope="module")
def run_bundle(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Path:
    root = tmp_path_factory.mktemp("run")
    src = write_src(root, RUN_SCRIPT, entries={"b": "features:entry", "c": "features:entry"})
    out = root / "run.evb"
    proc = edgevm("pack", str(src), "--keys", str(keys), "-o", str(out), "--target", TARGET)
    assert proc.returncode == 0, proc.stderr
    return out


def run(bundle: Path, keys: Path | None, inputs: dict, *args: str, business: str = "b") -> subprocess.CompletedProcess:
    return edgevm("run", str(bundle), *(["--keys", str(keys)] if keys else []), "--system", "s", "--business",
                  business, "--input", "-", *args, stdin=json.dumps(inputs))


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_run_shows_script_output_on_stderr_unless_quiet(run_bundle: Path, keys: Path, mode: str) -> None:
    shown = run(run_bundle, keys, {"x": 7}, "--isolation", mode)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.splitlines() == ["[cli] printed 7", "[cli] logged by cli"]
    assert set(json.loads(shown.stdout)) == {"remaining_ms"}
    quiet = run(run_bundle, keys, {"x": 7}, "--isolation", mode, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_run_uses_the_device_runtimes_defaults(run_bundle: Path, keys: Path) -> None:
    from vm.host.config import default

    proc = run(run_bundle, keys, {}, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert 0 < json.loads(proc.stdout)["remaining_ms"] <= default("deadline_ms")
    helptext = " ".join(edgevm("run", "--help").stdout.split())
    assert f"default: the runtime's, {default('deadline_ms')} ms" in helptext


def test_run_config_file_is_validated_and_flags_override_it(run_bundle: Path, keys: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"keys": str(keys), "isolation": "thread", "dedline_ms": 5}))
    typo = run(run_bundle, None, {}, "--config", str(config))
    assert typo.returncode == 11
    assert typo.stderr == "error[bad_input/1]: unknown config option(s): 'dedline_ms' (did you mean 'deadline_ms'?)\n"
    config.write_text(json.dumps({"keys": str(keys), "isolation": "thread", "deadline_ms": 5000}))
    for flags, mode in (([], "thread"), (["--isolation", "process"], "process")):
        proc = run(run_bundle, None, {}, "--config", str(config), "--metrics", "--quiet", *flags)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stderr)["isolation"]["mode"] == mode
    assert json.loads(proc.stdout)["remaining_ms"] > 50  # the file's deadline, not the default
    config.write_text("[1, 2]")
    assert run(run_bundle, keys, {}, "--config", str(config)).returncode == 11
    assert run(run_bundle, None, {}).stderr.startswith("error[bad_input/1]: run needs the device keys")


def test_run_repeat_prints_percentiles_and_metrics_count_every_run(run_bundle: Path, keys: Path) -> None:
    import re

    proc = run(run_bundle, keys, {}, "--quiet", "--repeat", "5", "--metrics", "--isolation", "thread")
    assert proc.returncode == 0, proc.stderr
    metrics_line, latency = proc.stderr.splitlines()
    assert json.loads(metrics_line)["tasks"]["infer"]["s/b"]["done"] == 5
    assert re.fullmatch(r"latency over 5 runs: p50 [\d.]+ ms, p90 [\d.]+ ms, p99 [\d.]+ ms "
                        r"\(min [\d.]+ ms, max [\d.]+ ms\)", latency), latency
    assert edgevm("run", str(run_bundle), "--keys", str(keys), "--system", "s", "--business", "b", "--input", "-",
                  "--repeat", "0").returncode == 2


def test_percentiles_are_nearest_rank() -> None:
    from vm.host.cli import percentiles

    assert percentiles(range(100, 0, -1)) == {"p50": 50, "p90": 90, "p99": 99}
    assert percentiles([3.0]) == {"p50": 3.0, "p90": 3.0, "p99": 3.0}
    assert percentiles([1, 2, 3, 4], (25, 50, 75, 100)) == {"p25": 1, "p50": 2, "p75": 3, "p100": 4}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_run_exit_status_tells_the_error_class(run_bundle: Path, keys: Path, tmp_path: Path, mode: str) -> None:
    unknown = run(run_bundle, keys, {}, "--isolation", mode, business="nope")
    assert unknown.returncode == 18
    assert unknown.stderr == "error[not_found/8]: no entry for system 's', business 'nope'; loaded: s/b, s/c\n"
    timeout = run(run_bundle, keys, {"mode": "spin"}, "--isolation", mode, "--quiet")
    assert timeout.returncode == 17 and timeout.stderr.startswith("error[timeout/7]: s/b did not finish"), \
        timeout.stderr
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"memory_limit_mb": 16}))
    memory = run(run_bundle, keys, {"mode": "memory"}, "--isolation", mode, "--quiet", "--config", str(config))
    assert memory.returncode == 21 and memory.stderr.startswith("error[resource/11]: features.py:13: MemoryError"), \
        memory.stderr
    assert "memory_limit_mb = 16" in memory.stderr
