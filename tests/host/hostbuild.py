"""Build ``libedgevm`` and the C host (``host.c``), and prepare a scenario for it: keys, the demo
bundle (``bundle/``), ranking inputs and the Python API's results for them.

Shared by ``tests/host/test_capi.py``, ``tests/host/run_demo.py`` and ``bench/capi.py``. The host is compiled
like an app would be: ``gcc host.c $(edgevm capi-flags)``.
"""
from __future__ import annotations

import os
import random
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[2]
HOST_DIR = Path(__file__).resolve().parent
# what build_capi reads: the library and its edgevm.pc files (template, version)
LIB_SOURCES = [ROOT / "build.py", *sorted((ROOT / "native" / "capi").iterdir()), ROOT / "native" / "zygote" / "launcher.c",
               ROOT / "vm" / "host" / "pkgconfig.py", ROOT / "vm" / "__init__.py"]
SYSTEM, BUSINESS = "home", "rank"
CLICK_EVENT = {"type": "mta", "pageId": "JD_Home", "clickId": "JD_Home_Sku", "sku": 1042, "ts": 1_700_000_000_000}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def library(*, force: bool = False) -> Path:
    """The libedgevm.so that ``edgevm capi-flags`` points at (installed by ``make``, or built in
    ``build/capi-<tag>-<env>/``); built with build.py first if missing or older than its sources."""
    from vm.host.cli import capi_paths

    lib = capi_paths()["lib"]
    stale = not lib.exists() or any(src.stat().st_mtime > lib.stat().st_mtime for src in LIB_SOURCES)
    if force or stale:
        subprocess.run([sys.executable, str(ROOT / "build.py"), "capi"], cwd=ROOT, env=_env(), check=True,
                       stdout=subprocess.DEVNULL)
        lib = capi_paths()["lib"]
    return lib


def capi_flags() -> list[str]:
    """What ``edgevm capi-flags`` prints, as arguments."""
    out = subprocess.run([sys.executable, "-m", "vm.host.cli", "capi-flags"], cwd=ROOT, env=_env(), check=True,
                         capture_output=True, text=True).stdout
    return shlex.split(out)


def build_host(out: Path, *, sanitize: str | None = None, source: str = "host.c") -> Path:
    """Compile ``source`` (host.c, or another host program here) against libedgevm with gcc, as an
    app would. With ``sanitize`` (``"thread"``,
    ``"address"``) both the library (into ``out``'s directory; run the host with
    ``EDGEVM_PYTHONPATH=ROOT``) and the host are instrumented."""
    cc = os.environ.get("CC", "gcc")
    if sanitize:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_edgevm_build", ROOT / "build.py")
        assert spec is not None and spec.loader is not None
        builder = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(builder)
        libdir = builder.build_capi(out.parent, sanitize=sanitize).parent
        flags = [f"-I{ROOT / 'native' / 'capi'}", f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-ledgevm",
                 f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
    else:
        library()
        flags = capi_flags()
    cmd = [cc, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", str(HOST_DIR / source),
           "-o", str(out), *flags]
    subprocess.run(cmd, check=True)
    return out


@dataclass
class Scenario:
    keys: Path
    bundle: Path
    cases: Path
    inputs: list[bytes]
    outputs: list[bytes]

    def host_args(self) -> list[str]:
        return ["--keys", str(self.keys), "--bundle", str(self.bundle), "--cases", str(self.cases)]


def ranking_request(rng: random.Random, now: int = 1_700_000_000_000) -> dict:
    """A re-ranking request: the session's recent events and the candidates the server sent."""
    n_events, n_cands = rng.randint(0, 30), rng.randint(3, 20)
    events = [{"ts": now - rng.randint(0, 3_600_000), "type": rng.choice(["click", "view", "cart", "purchase"]),
               "item_id": rng.randint(0, 40), "category": rng.randint(0, 7)} for _ in range(n_events)]
    candidates = [{"item_id": rng.randint(0, 40), "category": rng.randint(0, 7),
                   "price": round(rng.uniform(1, 500), 2), "popularity": rng.randint(0, 10_000)}
                  for _ in range(n_cands)]
    return {"now": now, "events": events, "candidates": candidates}


def write_cases(cases: Path, keys_dir: Path, bundle: Path, system: str, business: str,
                inputs: list[bytes], event: dict | None = None) -> list[bytes]:
    """``in_<i>.msgpack`` and the Python API's ``out_<i>.msgpack`` for each input (and
    ``event.msgpack``) in ``cases``; returns the outputs."""
    from vm.host.runtime import Runtime

    shutil.rmtree(cases, ignore_errors=True)
    cases.mkdir(parents=True)
    outputs = []
    with Runtime({"keys": str(keys_dir), "deadline_ms": 5000}) as rt:
        rt.load(bundle)
        for i, payload in enumerate(inputs):
            out = rt.infer_msgpack(system, business, payload)
            outputs.append(out)
            (cases / f"in_{i}.msgpack").write_bytes(payload)
            (cases / f"out_{i}.msgpack").write_bytes(out)
    if event is not None:
        (cases / "event.msgpack").write_bytes(msgpack.packb(event, use_bin_type=True))
    return outputs


def prepare(workdir: Path, *, n_cases: int = 6, seed: int = 7, keys_dir: Path | None = None) -> Scenario:
    """Keys (unless given), the packed demo bundle, inputs and the Python API's results, written
    under ``workdir``."""
    from vm.bundle import keys as keys_mod
    from vm.tools.packer import pack

    workdir.mkdir(parents=True, exist_ok=True)
    if keys_dir is None:
        keys_dir = workdir / "keys"
        if not (keys_dir / "device.json").exists():
            keys_mod.generate(keys_dir)
    bundle = workdir / "capi-demo.evb"
    target = f"{sys.version_info.major}.{sys.version_info.minor}"
    pack(HOST_DIR / "bundle", keys_dir, bundle, targets=[target])
    cases = workdir / "cases"
    rng = random.Random(seed)
    inputs = [msgpack.packb(ranking_request(rng), use_bin_type=True) for _ in range(n_cases)]
    outputs = write_cases(cases, keys_dir, bundle, SYSTEM, BUSINESS, inputs, CLICK_EVENT)
    return Scenario(keys=keys_dir, bundle=bundle, cases=cases, inputs=inputs, outputs=outputs)
