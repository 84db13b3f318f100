"""``edgevm pack`` and ``edgevm check``: compile, check, encrypt and sign a bundle (server side).

``check`` refuses what a device's load would refuse, as far as it can be known without running the
scripts: the manifest, entries naming a module or top-level function that does not exist, scripts
that do not compile under a target CPython (a ``ScriptSyntaxError``), the source policy, the
device's own bytecode check, models ONNX Runtime cannot load. ``pack`` runs it, then seals and signs.
Scripts are compiled by every target CPython (one code blob per bytecode magic number). The payload is encrypted under a fresh random content key
that is sealed to the device's X25519 key; the signature covers the prefix, the header and the
ciphertext (encrypt-then-sign), so a device verifies before it decrypts anything.
"""
from __future__ import annotations

import ast
import base64
import difflib
import glob
import importlib.util
import json
import marshal
import os
import re
import shutil
import subprocess
import symtable
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import nacl.bindings
import nacl.utils
from nacl.public import SealedBox

import vm
from vm import wire
from vm.bundle import format as bundle_format
from vm.bundle import keys, loader
from vm.bundle import manifest as manifest_rules
from vm.bundle.versions import parse_version
from vm.errors import BadInput, EdgeError, NotFound, PolicyError, ScriptError
from vm.policy import rules
from vm.policy.verifier import verify_module_code
from vm.tools import source_policy

WORKER = Path(__file__).with_name("compile_worker.py")
MIN_TARGET = (3, 11)


class ProblemList(EdgeError):
    """An error listing ``file:line:col: reason`` lines in ``problems`` (the message shows the first
    20); its code is the one of the ``vm.errors`` class it is combined with."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        super().__init__("\n".join([message, *self.problems[:20]]), detail={"problems": self.problems})


class PackError(ProblemList, PolicyError):
    """The source policy or the device's bytecode check refused the bundle."""


class ScriptSyntaxError(ProblemList, ScriptError):
    """A script does not compile under a target CPython: a script error (what importing its source
    would raise), not a policy violation."""


@dataclass
class CheckResult:
    """What ``check`` accepted: the manifest, the scripts, their code per bytecode magic, the models
    (quantised where asked) and their quantisation reports."""

    manifest: dict[str, Any]
    modules: dict[str, dict[str, Any]]
    code: dict[str, dict[str, bytes]]
    targets: list[dict[str, str]]
    models: dict[str, bytes]
    quantization: dict[str, dict]


@dataclass
class PackResult:
    path: Path
    size: int
    targets: list[dict[str, str]]
    modules: list[str]
    models: dict[str, int] = field(default_factory=dict)
    quantization: dict[str, dict] = field(default_factory=dict)


def read_manifest(src: Path) -> dict[str, Any]:
    """``bundle.json``, validated by the rules the device's loader applies (``vm.bundle.manifest``)."""
    try:
        doc = json.loads((src / "bundle.json").read_text())
    except FileNotFoundError:
        raise NotFound(f"{src}/bundle.json not found") from None
    except ValueError as exc:
        raise BadInput(f"bundle.json is not valid JSON: {exc}") from None
    return manifest_rules.validate(doc).doc


def collect_scripts(src: Path) -> dict[str, dict[str, Any]]:
    """Module name -> {"file", "source", "package"} for every ``.py`` under ``src``; every
    directory holding scripts is a package (an empty one if it has no ``__init__.py``)."""
    modules: dict[str, dict[str, Any]] = {}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        if not parts or not all(p.isidentifier() for p in parts):
            raise BadInput(f"{rel}: not an importable module path")
        modules[".".join(parts)] = {"file": rel.as_posix(), "source": path.read_text(encoding="utf-8"),
                                    "package": is_package}
    for name in list(modules):
        parent = name.rpartition(".")[0]
        while parent and parent not in modules:
            modules[parent] = {"file": f"{parent.replace('.', '/')}/__init__.py", "source": "",
                               "package": True}
            parent = parent.rpartition(".")[0]
    if not modules:
        raise BadInput(f"{src}: no scripts (*.py) found")
    return modules


# Where interpreters built from source live, one prefix per version (``py314/bin/python3.14``, and
# ``py314t`` for the free-threaded build, which compiles the same bytecode).
SOURCE_BUILDS = os.environ.get("EDGEVM_PYTHONS", os.path.expanduser("~/.cache/edgevm"))


def find_interpreters(targets: list[str] | None) -> dict[str, str]:
    """Target version -> interpreter path: this interpreter for its own version, else ``python3.X`` on
    PATH, under pyenv, or built from source under ``SOURCE_BUILDS``."""
    current = f"{sys.version_info.major}.{sys.version_info.minor}"

    def lookup(version: str) -> str | None:
        if version == current:
            return sys.executable
        exe = shutil.which(f"python{version}")
        if exe and _runs(exe):
            return exe
        root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"),
                       key=lambda p: [int(x) for x in re.findall(r"\d+", p.split("/versions/")[1].split("/")[0])])
        if found:
            return found[-1]
        built = [f"{SOURCE_BUILDS}/py{version.replace('.', '')}{t}/bin/python{version}{t}" for t in ("", "t")]
        return next((exe for exe in built if os.access(exe, os.X_OK) and _runs(exe)), None)

    if targets:
        out = {}
        for t in targets:
            if not re.fullmatch(r"3\.\d+", t) or tuple(int(x) for x in t.split(".")) < MIN_TARGET:
                raise BadInput(f"target {t!r}: expected a CPython version like 3.12 (3.11 or newer)")
            exe = lookup(t)
            if exe is None:
                raise NotFound(f"target {t}: no python{t} on PATH, under pyenv or in {SOURCE_BUILDS}")
            out[t] = exe
        return out
    return {f"3.{m}": exe for m in range(MIN_TARGET[1], 20) if (exe := lookup(f"3.{m}"))}


def _runs(exe: str) -> bool:
    try:
        return subprocess.run([exe, "-c", "pass"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _guarded(source: str) -> list[str]:
    """The attribute names the compile worker turns into run-time guard calls (none for a script
    that does not parse: the worker reports the syntax error)."""
    try:
        return source_policy.guarded_attributes(ast.parse(source))
    except SyntaxError:
        return []


def compile_for(exe: str, version: str, modules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Run the compile worker under interpreter ``exe`` (CPython ``version``); a script that does not
    compile is a ``ScriptSyntaxError``."""
    request = {"modules": {n: {"file": m["file"], "source": m["source"], "guarded": _guarded(m["source"])}
                           for n, m in modules.items()},
               "guards": rules.ATTRIBUTE_GUARDS}
    proc = subprocess.run([exe, "-I", "-S", str(WORKER)], input=json.dumps(request), capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise EdgeError(f"compiler {exe} failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout)
    if result["errors"]:
        raise ScriptSyntaxError(f"{len(result['errors'])} script(s) do not compile under CPython {version}",
                                result["errors"])
    return result


def top_level_names(source: str, file: str) -> set[str]:
    """Names a module may bind at its top level: defs, classes, assignments, imports (in any
    top-level statement, ``if``/``try`` bodies included), and names a function declares ``global``."""
    try:
        table = symtable.symtable(source, file, "exec")
    except SyntaxError as exc:
        host = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise ScriptSyntaxError(f"{file} does not parse under CPython {host}, which checks the sources",
                                [f"{file}:{exc.lineno or 0}:{exc.offset or 0}: syntax error: {exc.msg}"]) from None
    return {sym.get_name() for sym in table.get_symbols()
            if sym.is_assigned() or sym.is_imported() or sym.is_namespace() or sym.is_declared_global()}


def check_entries(manifest: dict[str, Any], modules: dict[str, dict[str, Any]], *, functions: bool) -> None:
    """Every entry names a script module and, with ``functions``, a name its module binds at top
    level (what the device looks up once the module ran); ``BadInput`` lists every entry that does not."""
    problems = []
    defined: dict[str, set[str]] = {}
    for business, spec in manifest["entries"].items():
        module, _, func = spec.partition(":")
        if module not in modules:
            problems.append(f"entry {business!r} names module {module!r}, which is not among the scripts "
                            f"(modules: {', '.join(sorted(modules))})")
            continue
        if not functions:
            continue
        m = modules[module]
        names = defined.get(module)
        if names is None:
            names = defined[module] = top_level_names(m["source"], m["file"])
        if func not in names:
            close = difflib.get_close_matches(func, sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"entry {business!r} names {spec}, but {m['file']} defines no {func!r} at its top "
                            f"level{hint}")
    if problems:
        raise BadInput("bundle.json: " + "; ".join(problems))


def check(src_dir: str | Path, *, targets: list[str] | None = None, skip_source_policy: bool = False,
          quantize: dict[str, str] | None = None) -> CheckResult:
    """Every check ``pack`` makes, without keys and without writing anything: the manifest, the
    entries, compiling under every target, the source policy, the device's bytecode check, the
    models. Raises ``BadInput``/``NotFound`` (the manifest, files), ``ScriptSyntaxError``, ``PackError``."""
    src = Path(src_dir)
    manifest = read_manifest(src)
    modules = collect_scripts(src)
    bundle_modules = frozenset(modules)
    check_entries(manifest, modules, functions=False)

    code_by_magic: dict[str, dict[str, bytes]] = {}
    target_info = []
    for version, exe in sorted(find_interpreters(targets).items()):
        result = compile_for(exe, version, modules)
        code_by_magic[result["magic"]] = {name: base64.b64decode(b) for name, b in result["code"].items()}
        target_info.append({"python": version, "version": result["python"], "magic": result["magic"]})

    if not skip_source_policy:
        check_entries(manifest, modules, functions=True)
        problems = [str(v) for name, m in modules.items() for v in source_policy.check_source(
            m["source"], file=m["file"], module=name, is_package=m["package"], bundle_modules=bundle_modules)]
        if problems:
            raise PackError(f"{len(problems)} policy violation(s)", problems)
        # The device will check this bytecode; refuse to ship what it would refuse.
        for name, blob in code_by_magic.get(importlib.util.MAGIC_NUMBER.hex(), {}).items():
            try:
                verify_module_code(marshal.loads(blob), filename=modules[name]["file"], bundle_modules=bundle_modules)
            except PolicyError as exc:
                raise PackError("compiled bytecode fails the load-time check", exc.detail["problems"]) from None

    models: dict[str, bytes] = {}
    reports: dict[str, dict] = {}
    for model_name, filename in manifest.get("models", {}).items():
        path = src / filename
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"model {model_name!r}: {path} not found") from None
        mode = (quantize or {}).get(model_name)
        if mode:
            from vm.tools.quantize import quantize_model

            data, reports[model_name] = quantize_model(data, mode)
        models[model_name] = data
    if models:
        from vm.ml.models import load_models

        load_models(models)  # what the device's load does first: a model ONNX Runtime refuses is BadInput
    return CheckResult(manifest=manifest, modules=modules, code=code_by_magic, targets=target_info, models=models,
                       quantization=reports)


def pack(src_dir: str | Path, keys_dir: str | Path, out: str | Path, *, targets: list[str] | None = None,
         skip_source_policy: bool = False, quantize: dict[str, str] | None = None,
         created: int | None = None, recipients: list[str | Path] | None = None) -> PackResult:
    """Build ``out`` from ``src_dir`` once ``check`` accepted it (same errors), sealed and signed with
    the server keys in ``keys_dir``. The content key is sealed to ``keys_dir``'s seal key (the
    device fleet's) and to each of ``recipients`` (``seal.pub`` files or keygen directories: a
    replay server's key, say), so each of them opens the bundle with its own secret."""
    read_manifest(Path(src_dir))  # a broken bundle.json is reported before missing keys
    server = keys.load_server(keys_dir)
    further: dict[bytes, Any] = {}  # key id -> X25519 public key, each once, the fleet's apart
    for recipient in recipients or []:
        public = keys.load_seal_key(recipient)
        further.setdefault(keys.key_id(bytes(public)), public)
    further.pop(server.seal_key_id, None)
    if len(further) + 1 > bundle_format.MAX_RECIPIENTS:
        raise BadInput(f"a bundle may be sealed to at most {bundle_format.MAX_RECIPIENTS} keys, "
                       f"got {len(further) + 1}")
    checked = check(src_dir, targets=targets, skip_source_policy=skip_source_policy, quantize=quantize)
    manifest, modules, reports = checked.manifest, checked.modules, checked.quantization
    code_by_magic, target_info, models = checked.code, checked.targets, checked.models

    full_manifest = dict(manifest)
    full_manifest.setdefault("min_runtime", "0.1")
    full_manifest["modules"] = {n: {"file": m["file"], "package": m["package"]} for n, m in modules.items()}
    if reports:
        full_manifest["quantization"] = reports
    data = seal_and_sign(server, {"manifest": full_manifest, "code": code_by_magic, "models": models}, {
        "name": manifest["name"], "version": manifest["version"],
        "created": int(time.time()) if created is None else created,
        "targets": target_info, "min_runtime": full_manifest["min_runtime"], "packer": vm.__version__,
    }, further)

    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out_path)
    return PackResult(path=out_path, size=len(data), targets=target_info, modules=sorted(modules),
                      models={k: len(v) for k, v in models.items()}, quantization=reports)


def seal_and_sign(server: keys.ServerKeys, payload: dict[str, Any], header: dict[str, Any],
                  further: Mapping[bytes, Any] | None = None) -> bytes:
    """The bundle container of ``payload`` and ``header``: the payload encrypted under a fresh content
    key sealed to the device's key and to each of ``further`` (key id -> X25519 public key) (the
    header, with those keys and the nonce, is the associated data), then prefix, header and
    ciphertext signed."""
    content_key = nacl.utils.random(32)
    nonce = nacl.utils.random(bundle_format.NONCE_LEN)
    body = msgpack.packb(payload, use_bin_type=True)
    head_doc = {**header, "nonce": nonce, "sealed_key": SealedBox(server.seal_to).encrypt(content_key)}
    if further:  # absent for one recipient: the bundle is then what older packers wrote
        head_doc["recipients"] = [[kid, SealedBox(k).encrypt(content_key)] for kid, k in further.items()]
    head = msgpack.packb(head_doc, use_bin_type=True)
    aad = bundle_format.prefix(server.sign_key_id, server.seal_key_id, len(head), len(body) + 16) + head
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, aad, nonce, content_key)
    signed = aad + ciphertext
    return signed + server.signing.sign(signed).signature


def reissue(data: bytes, keys_dir: str | Path, version: str, *, max_size: int,
            created: int | None = None) -> bytes:
    """Bundle ``data``'s contents (code, models, manifest) under a new ``version``, sealed and signed
    anew with the keys in the keygen directory ``keys_dir``, which must also hold the device key that
    opens ``data`` (``edgevm channel rollback`` publishes the previous version's contents this way: a
    higher version is what devices accept)."""
    parse_version(version, "the re-issued version")
    device, server = keys.load_device(keys_dir), keys.load_server(keys_dir)
    raw = bundle_format.split(data, max_size)
    header = loader.verify(raw, device)
    payload = loader.decrypt(raw, header, device)
    old = wire.decode(raw.header, what="bundle header")
    fields = {k: v for k, v in old.items() if k not in ("nonce", "sealed_key", "recipients")}  # sealed anew
    fields.update(version=version, created=int(time.time()) if created is None else created)
    return seal_and_sign(server, {**payload, "manifest": {**payload["manifest"], "version": version}}, fields)
