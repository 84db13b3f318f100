"""``edgevm``: keygen, pack, inspect and run bundles from the command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vm.errors import BadInput, EdgeError, NotFound
from vm.host.config import ISOLATION_MODES


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def cmd_keygen(args: argparse.Namespace) -> int:
    from vm.bundle import keys

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
    from vm.tools.packer import PackError, pack

    quantize = {}
    for item in args.quantize or []:
        name, _, mode = item.partition("=")
        if not mode:
            raise BadInput(f"--quantize expects NAME=MODE (fp32, fp16, uint8), got {item!r}")
        quantize[name] = mode
    try:
        result = pack(args.src, args.keys, args.output, targets=args.target,
                      skip_source_policy=args.unsafe_skip_source_policy, quantize=quantize)
    except PackError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"error[{exc.name}/{exc.code}]: {len(exc.problems)} problem(s); nothing was packed", file=sys.stderr)
        return 1
    targets = ", ".join(f"{t['python']} ({t['magic']})" for t in result.targets)
    print(f"packed {result.path} ({result.size} bytes): modules {', '.join(result.modules)}; targets {targets}")
    if args.unsafe_skip_source_policy:
        print("WARNING: the source policy was skipped (--unsafe-skip-source-policy)", file=sys.stderr)
    for name, report in result.quantization.items():
        print(f"  model {name}: {json.dumps(report, sort_keys=True)}")
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


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from vm.host.runtime import Runtime

    inputs = _read_input(args.input)
    config: dict[str, Any] = {"keys": args.keys, "deadline_ms": args.deadline_ms}
    if args.isolation:
        config["isolation"] = args.isolation
    with Runtime(config) as rt:
        rt.load(args.bundle)
        repeat = max(1, args.repeat)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = rt.infer(args.system, args.business, inputs)
            times.append((time.perf_counter() - t0) * 1000)
    _print_json(result)
    if args.repeat > 1:
        times.sort()
        print(f"# {repeat} runs: p50 {times[len(times) // 2]:.3f} ms, min {times[0]:.3f} ms", file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("keygen", help="write a new server and device key set")
    p.add_argument("--out", required=True, help="directory to write the keys to (refused if it holds keys)")
    p.add_argument("--force", action="store_true", help="replace the keys already in --out (devices pinned "
                                                        "to them then refuse new bundles)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("pack", help="compile, check, encrypt and sign a bundle")
    p.add_argument("src", help="directory with bundle.json and the scripts")
    p.add_argument("--keys", required=True, help="keygen directory (server keys)")
    p.add_argument("-o", "--output", required=True, help="bundle file to write (.evb)")
    p.add_argument("--target", action="append", help="CPython version to compile for (repeatable); "
                                                      "default: every CPython >= 3.11 found")
    p.add_argument("--quantize", action="append", metavar="MODEL=MODE",
                   help="quantise a model: fp32, fp16 or uint8 (repeatable)")
    p.add_argument("--unsafe-skip-source-policy", action="store_true",
                   help="do not check sources (for tests and audits of the load-time check only)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("inspect", help="show a bundle's header, key ids, targets and signature")
    p.add_argument("bundle")
    p.add_argument("--keys", help="device keys: also verify, decrypt and list the contents")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("run", help="load and run a bundle as the device would")
    p.add_argument("bundle")
    p.add_argument("--keys", required=True, help="device keys (keygen directory or device.json)")
    p.add_argument("--system", required=True)
    p.add_argument("--business", required=True)
    p.add_argument("--input", required=True, help="input file (.json or .msgpack; - for JSON on stdin)")
    p.add_argument("--deadline-ms", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=1, help="run N times and report latency on stderr")
    p.add_argument("--isolation", choices=ISOLATION_MODES,
                   help="run the bundle in a locked-down worker process (the default where the OS can fork) or "
                        "in this process")
    p.set_defaults(func=cmd_run)

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
        print(exc.one_line(), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error[bad_input/1]: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
