"""``edgevm``: keygen, check, pack, inspect, run and replay bundles from the command line."""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vm.errors import ALL_ERRORS, BadInput, EdgeError, NotFound, Timeout
from vm.host.config import ISOLATION_MODES, default

if TYPE_CHECKING:
    from vm.tools.packer import ProblemList

EXIT_OK = 0
EXIT_CRASH = 1  # an uncaught exception: Python's own exit status for a traceback
EXIT_USAGE = 2  # argparse's exit status for a bad command line
EXIT_BASE = 10  # an EdgeError exits with EXIT_BASE + its code (vm.errors)


def exit_code(error: EdgeError | type[EdgeError]) -> int:
    """The exit status for ``error``: ``EXIT_BASE`` + its stable code."""
    return EXIT_BASE + error.code


def exit_codes() -> list[tuple[int, str, str]]:
    """(status, name, meaning) of every exit status the CLI uses, the error classes from ``vm.errors``."""
    return [(EXIT_OK, "ok", "success"),
            (EXIT_CRASH, "unexpected", "an unexpected failure of the CLI itself (a Python traceback: a bug in edgevm)"),
            (EXIT_USAGE, "usage", "the command line is wrong (unknown option, missing argument)"),
            *((exit_code(cls), cls.name, " ".join((cls.__doc__ or "").replace("``", "").split()))
              for cls in ALL_ERRORS)]


def _epilog() -> str:
    rows = "\n".join(f"  {status:<5}{name:<14}{meaning}" for status, name, meaning in exit_codes())
    return (f"exit status:\n{rows}\n\n"
            "pack and check: bad_input is bundle.json (or a path) that is wrong, script a script that does not "
            "compile, policy a script the sandbox policy refuses.")


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def cmd_keygen(args: argparse.Namespace) -> int:
    from vm.bundle import keys

    if args.tuf or args.role:
        from vm.tools import publish

        if args.force:
            raise BadInput("keygen --tuf never replaces channel keys: write new ones to a new directory and "
                           "move the channel to them with edgevm channel rotate")
        ids = publish.init_keys(args.out, args.role or publish.ROLES)
        print(f"wrote channel role keys to {args.out} (secret, 0600): "
              + ", ".join(f"{role} {kid[:16]}" for role, kid in ids.items()))
        return 0
    if args.recipient_for:
        ids = keys.generate_recipient(args.out, args.recipient_for, force=args.force)
        print(f"wrote a decrypt-only key set to {args.out} (seal key id {ids['seal_key_id']}, pinning sign key id "
              f"{ids['sign_key_id']}): pack --recipient {args.out} seals bundles to it too")
        return 0
    ids = keys.generate(args.out, force=args.force)
    if ids["replaced"]["files"]:
        print(f"replaced the keys in {args.out}: {keys.describe_ids(ids['replaced'])} "
              "(devices pinned to them refuse bundles signed with the new keys)")
    print(f"wrote keys to {args.out}")
    print(f"  server: {keys.SIGNING_FILE} (secret, 0600, sign key id {ids['sign_key_id']}), "
          f"{keys.SEAL_FILE} (seal key id {ids['seal_key_id']})")
    print(f"  device: {keys.DEVICE_FILE} (secret, 0600: pinned verify key + decrypt key), "
          f"{keys.VERIFY_FILE}, {keys.OPEN_FILE}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from vm.tools.packer import ProblemList, pack

    quantize = {}
    for item in args.quantize or []:
        name, _, mode = item.partition("=")
        if not mode:
            raise BadInput(f"--quantize expects NAME=MODE (fp32, fp16, uint8), got {item!r}")
        quantize[name] = mode
    try:
        result = pack(args.src, args.keys, args.output, targets=args.target,
                      skip_source_policy=args.unsafe_skip_source_policy, quantize=quantize,
                      recipients=args.recipient)
    except ProblemList as exc:
        return _problems(exc, "nothing was packed")
    targets = ", ".join(f"{t['python']} ({t['magic']})" for t in result.targets)
    print(f"packed {result.path} ({result.size} bytes): modules {', '.join(result.modules)}; targets {targets}")
    if args.unsafe_skip_source_policy:
        print("WARNING: the source policy was skipped (--unsafe-skip-source-policy)", file=sys.stderr)
    for name, report in result.quantization.items():
        print(f"  model {name}: {json.dumps(report, sort_keys=True)}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from vm.tools import publish

    done = publish.publish(args.bundle, args.channel, args.keys, rollout=args.rollout,
                           device_classes=args.device_class or [], min_runtime=args.min_runtime,
                           ab=dict(args.ab or []))
    o = done.offer
    print(f"published {o.name} {o.version} to {args.channel} ({done.length} bytes, sha256 {done.sha256[:16]}...): "
          f"rollout {o.rollout:g}%, device classes {', '.join(o.device_classes) or 'all'}"
          + (f", A/B {', '.join(f'{g} {bp / 100:g}%' for g, bp in o.ab)}" if o.ab else ""))
    return 0


def cmd_channel(args: argparse.Namespace) -> int:
    from vm.tools import publish

    if args.action == "init":
        if args.keys is None:
            raise BadInput("channel init needs --keys DIR (the role keys; kept apart from the channel)")
        root = publish.init_channel(args.channel, args.keys)
        print(f"created channel {args.channel}; role keys in {args.keys} (secret, 0600)")
        print(f"  ship {root} with the app: it is the devices' trust anchor (config update.root)")
    elif args.action == "refresh":
        if args.keys is None:
            raise BadInput("channel refresh needs --keys DIR")
        publish.refresh(args.channel, args.keys)
        print(f"re-signed the snapshot and timestamp of {args.channel}")
    elif args.action == "rotate":
        if args.keys is None or args.new_keys is None:
            raise BadInput("channel rotate needs --keys DIR (the current role keys) --new-keys DIR "
                           "(edgevm keygen --tuf)")
        roles = publish.rotate(args.channel, args.keys, args.new_keys)
        print(f"rotated the {', '.join(roles)} key(s) of {args.channel}: root v{publish.Channel(args.channel).root.signed.version} "
              f"signed by the old and new root keys; {args.new_keys} now holds the channel's keys")
    elif args.action == "rollback":
        if args.keys is None or args.bundle_keys is None or args.name is None:
            raise BadInput("channel rollback needs DIR NAME --keys DIR (role keys) --bundle-keys DIR (keygen keys)")
        done = publish.rollback(args.channel, args.keys, args.bundle_keys, args.name, version=args.version)
        o = done.offer
        print(f"rolled {o.name} back: published the contents of {o.reissue_of} as {o.version} to {args.channel} "
              f"(rollout {o.rollout:g}%, device classes {', '.join(o.device_classes) or 'all'})")
    else:
        doc = publish.status(args.channel)
        print(publish.dumps(doc) if args.json else publish.format_status(doc))
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """``edgevm snapshot build|publish|inspect`` (docs/snapshots.md)."""
    if args.action == "build":
        from vm.tools import snapshot

        if not args.name or not args.version or not args.keys or not args.output:
            raise BadInput("snapshot build needs NAME VERSION --keys DIR -o FILE, and --column NAME=FILE.npy "
                           "... or --dict FILE.json")
        columns = dict(_pair(c) for c in args.column) if args.column else None
        done = snapshot.build(args.name, args.version, args.keys, args.output, columns=columns, table=args.dict,
                              encrypt=args.encrypt)
        print(f"built snapshot {done.name} {done.version} ({done.kind}, {done.size} bytes, "
              f"{'encrypted' if done.encrypted else 'signed, not encrypted'}) -> {done.path}")
    elif args.action == "publish":
        from vm.tools import publish

        if not args.channel or not args.keys:
            raise BadInput("snapshot publish needs FILE --channel DIR --keys DIR (the channel's role keys)")
        pub = publish.publish_snapshot(args.name, args.channel, args.keys)
        print(f"published snapshot {pub.offer.name} {pub.offer.version} to {args.channel} ({pub.length} bytes, "
              f"sha256 {pub.sha256[:16]}...)")
    else:
        from vm.tools import snapshot

        doc = snapshot.read_header(Path(args.name).read_bytes())
        if args.keys:
            from vm.bundle.keys import load_device
            from vm.bundle.snapshot import open_snapshot

            doc = open_snapshot(Path(args.name).read_bytes(), load_device(args.keys), max_size=1 << 34).info()
            doc["signature"] = "valid"
        _print_json(doc)
    return 0


def _pair(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise BadInput(f"--column takes NAME=FILE.npy, got {text!r}")
    return name, path
def cmd_update_client(args: argparse.Namespace) -> int:
    """The TUF conformance suite's client-under-test protocol, run by the device's own channel
    client (``vm.update.channel``): exit 0 on success, 1 on any failure (the reason on stderr)."""
    from urllib.parse import quote

    from vm.update.channel import ChannelClient, trust_root
    from vm.update.fetcher import ChannelFetcher

    metadata_dir = Path(args.metadata_dir)
    try:
        if args.step == "init":
            trust_root(metadata_dir, Path(args.trusted_root))
            return EXIT_OK
        need = ["metadata_url"] + (["target_name", "target_base_url", "target_dir"] if args.step == "download" else [])
        missing = [f"--{n.replace('_', '-')}" for n in need if not getattr(args, n)]
        if missing:
            raise BadInput(f"update-client {args.step} needs {', '.join(missing)}")
        client = ChannelClient(None, metadata_dir, metadata_dir / "root.json", ChannelFetcher(),
                               metadata_url=args.metadata_url, target_base_url=args.target_base_url)
        client.refresh_metadata()
        if args.step == "download":
            target = client.target(args.target_name)
            dest = Path(args.target_dir) / quote(args.target_name, safe="")
            if not client.cached(target, dest):
                client.download(target, dest)
    except (EdgeError, OSError) as exc:
        error = exc if isinstance(exc, EdgeError) else BadInput(str(exc))
        print(error.one_line(), file=sys.stderr)
        return EXIT_CRASH
    return EXIT_OK


def _rollout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be in [0, 100], got {text}")
    return value


def _ab(text: str) -> tuple[str, float]:
    group, sep, percent = text.rpartition("=")
    if not sep or not group:
        raise argparse.ArgumentTypeError(f"expected GROUP=PERCENT, got {text!r}")
    return group, _rollout(percent)


def _problems(exc: ProblemList, outcome: str) -> int:
    """Print a ``ProblemList``: one ``file:line:col: reason`` line each, then the one-line summary."""
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    summary = exc.message.splitlines()[0]
    print(f"error[{exc.name}/{exc.code}]: {summary}; {outcome}", file=sys.stderr)
    return exit_code(exc)


def cmd_check(args: argparse.Namespace) -> int:
    from vm.tools.packer import ProblemList, check

    try:
        result = check(args.src, targets=args.target)
    except ProblemList as exc:
        return _problems(exc, "the device would refuse this bundle")
    manifest = result.manifest
    targets = ", ".join(f"{t['python']} ({t['magic']})" for t in result.targets)
    print(f"ok: {manifest['name']} {manifest['version']}: entries {', '.join(sorted(manifest['entries']))}; "
          f"modules {', '.join(sorted(result.modules))}; models {', '.join(sorted(result.models)) or 'none'}; "
          f"targets {targets}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from vm.bundle import keys, loader
    from vm.host.config import default

    data = Path(args.bundle).read_bytes()
    device = keys.load_device(args.keys) if args.keys else None
    max_size = default("max_bundle_bytes")
    info = loader.read_header(data, device, max_size=max_size)
    if device is not None:
        bundle = loader.open_bundle(data, device, max_size=max_size)
        info["manifest"] = dict(bundle.manifest.doc)
        info["contents"] = {
            "modules": {name: {"file": bundle.manifest.doc["modules"][name]["file"],
                               "code_objects": _count_code(code)} for name, code in sorted(bundle.codes.items())},
            "models": {name: {"bytes": len(data)} for name, data in sorted(bundle.models.items())},
            "bytecode_check": "passed",
        }
        if bundle.models:
            from vm.ml import models

            for name, session in models.load_models(bundle.models).items():
                signature = session.signature()
                info["contents"]["models"][name].update(inputs=signature["inputs"], outputs=signature["outputs"])
    _print_json(info)
    return 0


def _count_code(code: Any) -> int:
    import types

    return 1 + sum(_count_code(c) for c in code.co_consts if isinstance(c, types.CodeType))


def _read_input(path: str) -> Any:
    import msgpack

    p = Path(path)
    raw = sys.stdin.buffer.read() if path == "-" else p.read_bytes()
    if p.suffix == ".msgpack":
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadInput(f"input {path} is not valid JSON: {exc}") from None


def _config_file(path: str | None) -> dict[str, Any]:
    """The JSON object of runtime options in ``--config`` (empty without one)."""
    if not path:
        return {}
    try:
        doc = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise BadInput(f"--config {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"--config {path} must hold a JSON object of runtime options")
    return doc


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The runtime options for ``run``: the ``--config`` file, then the flags given on the command line."""
    doc = _config_file(args.config)
    if "log" in doc:
        raise BadInput(f"--config {args.config}: 'log' is the Python API's callback; the CLI prints script "
                       "output on stderr (--quiet hides it)")
    for option, value in (("keys", args.keys), ("deadline_ms", args.deadline_ms), ("isolation", args.isolation)):
        if value is not None:
            doc[option] = value
    if "keys" not in doc:
        raise BadInput("run needs the device keys: --keys DIR, or \"keys\" in the --config file")
    doc["log"] = _ignore_log if args.quiet else _print_log
    return doc


def _print_log(bundle: str, line: str) -> None:
    """Script output (``print``, ``edge.log``) on stderr, as it happens."""
    print(f"[{bundle}] {line}", file=sys.stderr, flush=True)


def _ignore_log(bundle: str, line: str) -> None:
    """--quiet: script output goes nowhere."""


def percentiles(samples: Sequence[float], points: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of ``samples`` (``{"p50": ..., ...}``): each is one of the samples."""
    ordered = sorted(samples)
    return {f"p{p}": ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] for p in points}


def _exit_at_deadline(rt: Any, label: str, deadline_ms: int) -> None:
    """Thread mode: end the process at ``deadline_ms`` + grace with the timeout's line and exit
    status, from a C thread, whatever the worker does (a script's C call holding the GIL stops every
    Python thread, this one included). ``_guard.exit_disarm()`` cancels it."""
    from vm.guard import _guard

    error = Timeout(f"{label} did not finish before its deadline ({deadline_ms} ms); a C call in the script "
                    f"still held the interpreter {rt.config.grace_ms} ms later, so the CLI exits")
    _guard.exit_arm((deadline_ms + rt.config.grace_ms) / 1000, exit_code(error), (error.one_line() + "\n").encode())


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from vm.guard import _guard
    from vm.host.runtime import Runtime

    config = _run_config(args)
    inputs = _read_input(args.input)
    times: list[float] = []
    with Runtime(config) as rt:
        thread_mode = rt.config.isolation == "thread"
        try:
            if thread_mode:
                _exit_at_deadline(rt, f"loading {args.bundle}", rt.config.load_deadline_ms)
            rt.load(args.bundle)
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                if thread_mode:
                    _exit_at_deadline(rt, f"{args.system}/{args.business}", rt.config.deadline_ms)
                result = rt.infer(args.system, args.business, inputs)
                if thread_mode:
                    _guard.exit_disarm()
                times.append((time.perf_counter() - t0) * 1000)
        except Timeout:
            raise  # still armed: if the worker keeps the interpreter, the exit thread ends the CLI
        except BaseException:
            if thread_mode:
                _guard.exit_disarm()
            raise
        finally:
            if args.metrics:
                print(json.dumps(rt.metrics(), sort_keys=True, default=str), file=sys.stderr)
    _print_json(result)
    if args.repeat > 1:
        stats = ", ".join(f"{name} {ms:.3f} ms" for name, ms in percentiles(times).items())
        print(f"latency over {len(times)} runs: {stats} (min {min(times):.3f} ms, max {max(times):.3f} ms)",
              file=sys.stderr)
    return 0


def _event_tables(specs: list[str] | None) -> dict[str, str] | None:
    """``--events TABLE=PATH`` options as {table: path}."""
    if not specs:
        return None
    tables = {}
    for spec in specs:
        table, sep, path = spec.partition("=")
        if not sep or not table or not path or table in tables:
            raise BadInput(f"--events takes TABLE=PATH, once per table, got {spec!r}")
        tables[table] = path
    return tables


def cmd_replay(args: argparse.Namespace) -> int:
    from vm.tools.replay import replay

    config = _config_file(args.config)
    if args.isolation:
        config["isolation"] = args.isolation
    done = replay(args.bundle, args.keys, args.input, system=args.system, business=args.business, out=args.out,
                  engine=args.engine, workers=args.workers, ray_address=args.ray_address,
                  batch_rows=args.batch_rows, key_column=args.key_column, config=config,
                  events=_event_tables(args.events), user_column=args.user_column, time_column=args.time_column,
                  progress=None if args.quiet else sys.stderr)
    _print_json({"rows": done.rows, "errors": done.errors, "out": str(done.out), "engine": done.engine,
                 "workers": done.workers, "seconds": round(done.seconds, 3)})
    return 0


def capi_paths() -> dict[str, Path]:
    """Where the C API is for this interpreter: installed into the environment (``lib/libedgevm.so``,
    ``include/edgevm.h``: what ``pip install`` / ``make`` put there) or built in a source tree
    (``build/capi-<tag>-<env>/libedgevm.so``, ``native/capi/edgevm.h``: ``pip install -e``, ``python build.py
    capi``), whichever library is newer."""
    import vm

    prefix = Path(sys.prefix)
    found = {"lib": prefix / "lib" / "libedgevm.so", "header": prefix / "include" / "edgevm.h"}
    src = Path(vm.__file__).resolve().parent.parent
    if (src / "native" / "capi" / "edgevm.h").is_file() and (src / "build.py").is_file():
        import hashlib

        env = hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]
        dev = {"lib": src / "build" / f"capi-{sys.implementation.cache_tag}-{env}" / "libedgevm.so",
               "header": src / "native" / "capi" / "edgevm.h", "source": src}
        if dev["lib"].is_file() and (not found["lib"].is_file()
                                     or dev["lib"].stat().st_mtime >= found["lib"].stat().st_mtime):
            found = dev
        elif not found["header"].is_file():
            found["header"] = dev["header"]
        found["source"] = src
    found["libdir"], found["includedir"] = found["lib"].parent, found["header"].parent
    return found


def cmd_capi_flags(args: argparse.Namespace) -> int:
    from vm import __version__ as version

    paths = capi_paths()
    if args.build:
        if "source" not in paths:
            raise NotFound("--build needs the edgevm source tree (build.py, native/)")
        import importlib.util

        spec = importlib.util.spec_from_file_location("_edgevm_build", paths["source"] / "build.py")
        assert spec is not None and spec.loader is not None
        builder = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(builder)
        builder.build_capi()
        paths = capi_paths()
    missing = [str(paths[k]) for k in ("lib", "header") if not paths[k].is_file()]
    if missing:
        raise NotFound(f"the C API is not built: missing {', '.join(missing)} "
                       "(reinstall edgevm, or run `edgevm capi-flags --build` in a source tree)")
    libdir, includedir = paths["libdir"], paths["includedir"]
    cflags = f"-I{includedir}"
    libs = f"-L{libdir} -Wl,-rpath,{libdir} -ledgevm"
    if args.pkg_config:
        from vm.host.pkgconfig import pc_text

        print(pc_text(version, str(libdir), str(includedir)), end="")
    elif args.cflags and not args.libs:
        print(cflags)
    elif args.libs and not args.cflags:
        print(libs)
    else:
        print(f"{cflags} {libs}")
    return 0


def version_text() -> str:
    """What ``edgevm --version`` prints: the runtime, the bundle format and what it runs on, the
    libraries' versions read from their metadata (numpy and onnxruntime are not imported)."""
    import importlib.metadata
    import importlib.util
    import platform

    from vm import __version__
    from vm.bundle.format import FORMAT_VERSION

    lines = [f"edgevm {__version__}", f"bundle format {FORMAT_VERSION}",
             f"CPython {platform.python_version()} (bytecode magic {importlib.util.MAGIC_NUMBER.hex()})"]
    for dist in ("numpy", "onnxruntime"):
        try:
            lines.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:  # a device image may ship packages without metadata
            found = importlib.util.find_spec(dist) is not None
            lines.append(f"{dist}: {'installed without its metadata (version unknown)' if found else 'not installed'}")
    return "\n".join(lines)


class _Version(argparse.Action):
    """``--version``: print ``version_text()`` and exit (computed only when asked for)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(version_text())
        parser.exit()


def _positive(text: str) -> int:
    """A whole number of at least 1 (``--repeat``, ``--deadline-ms``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevm", description=__doc__, epilog=_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the versions of edgevm, the bundle format, "
                                                           "CPython, numpy and onnxruntime, and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("keygen", help="write a new server and device key set")
    p.add_argument("--out", required=True, help="directory to write the keys to (refused if it holds keys)")
    p.add_argument("--force", action="store_true", help="replace the keys already in --out (devices pinned "
                                                        "to them then refuse new bundles)")
    p.add_argument("--tuf", action="store_true", help="write an update channel's TUF role keys instead (root, "
                                                      "targets, snapshot, timestamp; for channel init or rotate)")
    p.add_argument("--role", action="append", metavar="ROLE",
                   help="with --tuf: only this role's key (root, targets, snapshot or timestamp; repeatable), "
                        "e.g. to rotate one role")
    p.add_argument("--recipient-for", metavar="DIR", help="write only a further decrypt key (seal.pub, open.key, "
                                                          "device.json pinning DIR's verify key), e.g. for replay")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("pack", help="compile, check, encrypt and sign a bundle", epilog=_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="directory with bundle.json and the scripts")
    p.add_argument("--keys", required=True, help="keygen directory (server keys)")
    p.add_argument("-o", "--output", required=True, help="bundle file to write (.evb)")
    p.add_argument("--target", action="append", help="CPython version to compile for (repeatable); "
                                                      "default: every CPython >= 3.11 found")
    p.add_argument("--quantize", action="append", metavar="MODEL=MODE",
                   help="quantise a model: fp32, fp16 or uint8 (repeatable)")
    p.add_argument("--recipient", action="append", metavar="SEAL_KEY",
                   help="also seal the bundle to this X25519 key (a seal.pub or keygen directory; repeatable)")
    p.add_argument("--unsafe-skip-source-policy", action="store_true",
                   help="do not check sources (the policy, entry functions, the bytecode check): for tests and "
                        "audits of the load-time checks only")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("check", help="run pack's checks without keys and without writing anything",
                       description="Check a bundle source directory as pack does (bundle.json, entries, compiling "
                                   "for every target, the source policy, the device's bytecode check, the models), "
                                   "without keys and without writing anything: exit 0 if pack would accept it.",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="directory with bundle.json and the scripts")
    p.add_argument("--target", action="append", help="CPython version to compile for (repeatable); "
                                                      "default: every CPython >= 3.11 found")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("inspect", help="show a bundle's header, key ids, targets and signature", epilog=_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--keys", help="device keys: also verify, decrypt and list the contents")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("run", help="load and run a bundle as the device would",
                       description="Load a bundle and run one entry with the device runtime's defaults "
                                   "(docs/config.md); script output (print, edge.log) goes to stderr.",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--keys", help="device keys (keygen directory or device.json); or 'keys' in --config")
    p.add_argument("--system", required=True)
    p.add_argument("--business", required=True)
    p.add_argument("--input", required=True, help="input file (.json or .msgpack; - for JSON on stdin)")
    p.add_argument("--config", metavar="FILE", help="a JSON object of runtime options: any option of "
                                                    "docs/config.md but 'log' (paths relative to the current "
                                                    "directory); the flags below override it")
    p.add_argument("--deadline-ms", type=_positive,
                   help=f"deadline of each call (default: the runtime's, {default('deadline_ms')} ms)")
    p.add_argument("--isolation", choices=ISOLATION_MODES,
                   help="run the bundle in a locked-down worker process or in this process (default: the "
                        f"runtime's, here {default('isolation')!r}: process on Linux and Android)")
    p.add_argument("--repeat", type=_positive, default=1, metavar="N",
                   help="run N times; print latency percentiles (p50, p90, p99) on stderr")
    p.add_argument("--metrics", action="store_true", help="print the runtime's metrics (JSON) on stderr after "
                                                          "the run")
    p.add_argument("--quiet", action="store_true", help="do not show script output (print, edge.log)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replay", help="run a bundle over logged requests (Parquet or JSON Lines) into Parquet",
                       description="Run one entry of BUNDLE over every request in --input with the device's runtime, "
                                   "on a process pool or a Ray cluster; write the key, the result (msgpack) and "
                                   "a typed error per failed row to the Parquet directory --out (docs/replay.md).",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--keys", required=True, help="keyring that opens the bundle (a replay key: keygen --recipient-for)")
    p.add_argument("--input", required=True, help="Parquet file or directory, or JSON Lines file")
    p.add_argument("--system", required=True)
    p.add_argument("--business", required=True)
    p.add_argument("--out", required=True, help="output directory (new or empty) of Parquet files")
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=_positive, help="worker processes or Ray actors (default: CPUs here)")
    p.add_argument("--ray-address", help="Ray cluster to join (default: start a local one)")
    p.add_argument("--batch-rows", type=_positive, default=256, metavar="N", help="requests per batch")
    p.add_argument("--key-column", default="request_id", help="the request key's column (default request_id)")
    p.add_argument("--events", action="append", metavar="TABLE=PATH",
                   help="a table's logged events (Parquet or JSON Lines): run each request on a store holding "
                        "its user's events up to its time (tables declared in --config's data.tables)")
    p.add_argument("--user-column", default="user_id", help="with --events: the user's column (default user_id)")
    p.add_argument("--time-column", default="now", help="with --events: the request time, ms (default now)")
    p.add_argument("--isolation", choices=ISOLATION_MODES, help="runtime isolation of each worker's runtime")
    p.add_argument("--config", metavar="FILE", help="a JSON object of runtime options (docs/config.md)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("publish", help="add a bundle to an update channel (TUF metadata, staged rollout)",
                       description="Write BUNDLE into the channel directory as a TUF target and re-sign the "
                                   "channel's targets, snapshot and timestamp metadata (docs/ota.md). Serve the "
                                   "directory as it is, from any static HTTP server or CDN.",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--channel", required=True, metavar="DIR", help="channel directory (edgevm channel init)")
    p.add_argument("--keys", required=True, metavar="DIR", help="the channel's role keys (edgevm channel init)")
    p.add_argument("--rollout", type=_rollout, default=100.0, metavar="PERCENT",
                   help="share of devices that take it (a stable bucket per device and bundle name)")
    p.add_argument("--device-class", action="append", metavar="NAME",
                   help="only devices of this class take it (repeatable; default: all)")
    p.add_argument("--min-runtime", metavar="VERSION", help="lowest runtime version that takes it "
                                                            "(default: the bundle's own)")
    p.add_argument("--ab", type=_ab, action="append", metavar="GROUP=PERCENT",
                   help="an A/B group and its share of the devices that take it (repeatable; the shares "
                        "add up to 100; scripts read theirs with edge.ab_group())")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("channel", help="create an update channel, show what it publishes, re-sign it, roll back",
                       description="init: new role keys (in --keys, never in the channel) and empty signed "
                                   "metadata; status: what is published, to whom and until when; refresh: "
                                   "re-sign the snapshot and timestamp before they expire; rollback NAME: publish "
                                   "the previous version's contents again as a new, higher version (re-sealed "
                                   "and re-signed with --bundle-keys), for the devices the newest is for; rotate: "
                                   "move to the role keys in --new-keys through a new root version.",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("init", "status", "refresh", "rollback", "rotate"))
    p.add_argument("channel", metavar="DIR")
    p.add_argument("name", nargs="?", metavar="NAME", help="rollback: the bundle to roll back")
    p.add_argument("--keys", metavar="DIR", help="the channel's role keys (init, refresh, rollback, rotate)")
    p.add_argument("--new-keys", metavar="DIR", help="rotate: the new role keys (edgevm keygen --tuf); the roles "
                                                     "whose key is there are rotated")
    p.add_argument("--bundle-keys", metavar="DIR", help="rollback: the keygen directory the bundles are signed "
                                                        "with (it also opens the previous version)")
    p.add_argument("--version", metavar="VERSION", help="rollback: the new version (default: the newest with "
                                                        "its last number + 1)")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.set_defaults(func=cmd_channel)

    p = sub.add_parser("snapshot", help="build, publish or inspect a feature snapshot (docs/snapshots.md)",
                       description="build NAME VERSION: a signed (with --encrypt also encrypted) snapshot of numpy "
                                   "columns (--column NAME=FILE.npy, repeatable) or a dict (--dict FILE.json); "
                                   "publish FILE: add it to an update channel; inspect FILE: its header (with "
                                   "--keys: verified, decrypted, its columns).",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("build", "publish", "inspect"))
    p.add_argument("name", help="build: the snapshot's name; publish, inspect: the snapshot file")
    p.add_argument("version", nargs="?", help="build: the snapshot's version (1.2.0)")
    p.add_argument("--column", action="append", metavar="NAME=FILE.npy", help="a column (repeatable)")
    p.add_argument("--dict", metavar="FILE.json", help="a dict snapshot's contents")
    p.add_argument("--encrypt", action="store_true", help="seal the contents to the device key (keys/seal.pub)")
    p.add_argument("--keys", metavar="DIR", help="build: the bundle signing keys (keygen); publish: the channel's "
                                                 "role keys; inspect: device keys")
    p.add_argument("-o", "--output", metavar="FILE", help="build: the snapshot file to write (.evs)")
    p.add_argument("--channel", metavar="DIR", help="publish: the channel directory")
    p.set_defaults(func=cmd_snapshot)
    p = sub.add_parser("update-client", help="the device's TUF client on its own (TUF conformance protocol)",
                       description="Run the device's channel client (the updater's own code) as the TUF "
                                   "conformance suite's client under test: init trusts a root.json; refresh runs "
                                   "the TUF workflow; download also fetches one target (not again if the file in "
                                   "--target-dir already matches its hashes). Exit status 0 on success, 1 on any "
                                   "failure.")
    p.add_argument("--metadata-dir", required=True, metavar="DIR", help="trusted metadata (root.json, ...)")
    p.add_argument("--metadata-url", metavar="URL", help="the repository's metadata (refresh, download)")
    p.add_argument("--target-name", metavar="PATH", help="the target's TUF path (download)")
    p.add_argument("--target-base-url", metavar="URL", help="the repository's targets (download)")
    p.add_argument("--target-dir", metavar="DIR", help="where verified targets are stored (download)")
    steps = p.add_subparsers(dest="step", required=True)
    steps.add_parser("init", help="trust this root.json").add_argument("trusted_root", metavar="ROOT_JSON")
    steps.add_parser("refresh", help="update the trusted metadata")
    steps.add_parser("download", help="refresh, then download --target-name into --target-dir")
    p.set_defaults(func=cmd_update_client)

    p = sub.add_parser("capi-flags", help="print the compiler and linker flags for a host app using the C API",
                       description="Compile a host with `cc app.c $(edgevm capi-flags)`: -I for edgevm.h, "
                                   "-L/-rpath/-l for libedgevm.so.")
    p.add_argument("--cflags", action="store_true", help="only the compiler flags")
    p.add_argument("--libs", action="store_true", help="only the linker flags")
    p.add_argument("--pkg-config", action="store_true", help="print a pkg-config file (edgevm.pc) instead")
    p.add_argument("--build", action="store_true", help="(re)build libedgevm.so first (source tree only)")
    p.set_defaults(func=cmd_capi_flags)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeError as exc:
        error = exc
    except FileNotFoundError as exc:
        error = NotFound(str(exc))
    except OSError as exc:
        error = BadInput(str(exc))
    print(error.one_line(), file=sys.stderr)
    return exit_code(error)


if __name__ == "__main__":
    sys.exit(main())
