"""Cold start: a new process -> ``import vm`` -> ``Runtime`` -> ``load`` -> first ranking result.

Each sample is a fresh interpreter (``python -c``) that reports ``time.monotonic()`` (one clock for
every process on Linux) at each stage; the parent notes when it spawned the child. Stages:
``interpreter`` (spawn until the first line of the script runs), ``import_vm``, ``runtime``
(``Runtime(...)``; in process mode it starts the worker zygote in the background), ``load`` (verify,
decrypt, check, run the bundle's top levels, create and warm the model sessions; in process mode
also waiting for the zygote and the first worker), ``first_infer``.

Baseline, in the same run and alternating with the edgevm samples: the same model's first result
without edgevm (a fresh interpreter imports numpy and onnxruntime, creates the session from the
.onnx file and runs it once on the request's feature matrix): what an app pays for on-device
inference at all. ``ratio`` = edgevm's median to-first-result / the baseline's.

``maxrss_mb``: peak RSS (VmHWM) of the host process (thread mode: everything; process mode: the
host, and ``worker_hwm_mb``, the largest peak RSS of the zygote and its workers; they share most of
their pages). ``install_mb``: the apparent size of the
installed packages the thread-mode run used: the whole directories of those it imported (numpy,
msgpack, nacl, cffi's backend, vm without vm/tools, stdlib_slim), and of those it only mapped a
shared library from (onnxruntime's ``capi/libonnxruntime.so``, which ``vm.ml.ortapi`` loads without
importing the package) that library alone; not counting CPython itself (docs/shipping.md has the
full device image and what can be left out).

Last line: JSON with to_first_result_ms (per mode), stages, baseline_ms, ratio, maxrss_mb,
install_mb.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from infer_e2e import big_request  # noqa: E402

from examples.ranking import build_bundle  # noqa: E402
from vm.bundle import keys  # noqa: E402

SAMPLES = int(os.environ.get("COLD_SAMPLES", "7"))
STAGES = ("interpreter", "import_vm", "runtime", "load", "first_infer")

CHILD = """
import time
marks = [time.monotonic()]
import sys, json
sys.path.insert(0, {root!r})
from vm import Runtime
marks.append(time.monotonic())
rt = Runtime({{"keys": {keys!r}, "isolation": {mode!r}, "deadline_ms": 5000}})
marks.append(time.monotonic())
rt.load({bundle!r})
marks.append(time.monotonic())
rt.infer_msgpack("home", "rerank", open({payload!r}, "rb").read())
marks.append(time.monotonic())
hwm = 0.0
if {mode!r} == "process":
    import os
    zygote = rt.metrics()["isolation"]["zygote_pid"]
    pids = [zygote] + [int(p) for p in open(f"/proc/{{zygote}}/task/{{zygote}}/children").read().split()]
    for pid in pids:
        for line in open(f"/proc/{{pid}}/status"):
            if line.startswith("VmHWM:"):
                hwm = max(hwm, int(line.split()[1]) / 1024)
files = sorted({{m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)}})
mapped = sorted({{l.split(None, 5)[5].strip() for l in open("/proc/self/maps") if len(l.split(None, 5)) == 6
                 and ".so" in l.rsplit("/", 1)[-1]}})
host_hwm = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({{"marks": marks, "maxrss_mb": host_hwm,
                  "worker_hwm_mb": hwm, "files": files, "mapped": mapped}}), flush=True)
rt.close()
"""

BASELINE = """
import time
marks = [time.monotonic()]
import numpy as np
import onnxruntime as ort
sess = ort.InferenceSession({model!r}, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
x = np.load({features!r})
sess.run(None, {{name: x}})
marks.append(time.monotonic())
print(marks[-1], flush=True)
"""


# A device ships compiled bytecode: the children may write (and then read) __pycache__, whatever
# this shell's PYTHONDONTWRITEBYTECODE says; a discarded first round writes the caches.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _sample(code: str) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=ENV)
    if proc.returncode != 0:
        raise SystemExit(f"cold-start child failed:\n{proc.stderr}")
    return t0, proc.stdout.strip().splitlines()[-1]


def edgevm_sample(mode: str, paths: dict[str, str]) -> dict:
    t0, line = _sample(CHILD.format(root=str(ROOT), mode=mode, **paths))
    doc = json.loads(line)
    marks = [t0, *doc["marks"]]
    doc["stages"] = {s: (b - a) * 1000 for s, a, b in zip(STAGES, marks[:-1], marks[1:], strict=True)}
    doc["total_ms"] = (marks[-1] - t0) * 1000
    return doc


def baseline_sample(paths: dict[str, str]) -> float:
    t0, line = _sample(BASELINE.format(**paths))
    return (float(line) - t0) * 1000


def install_mb(files: list[str], mapped: list[str]) -> float:
    """Apparent size of the installed package directories the run imported from, and of the shared
    libraries it mapped from packages it did not import."""
    site = [Path(p) for p in sys.path if p.endswith("site-packages")]
    roots: set[Path] = {ROOT / "vm", ROOT / "stdlib_slim"}
    for f in map(Path, mapped):
        for s in site:
            if s in f.parents and not any(s / f.relative_to(s).parts[0] in Path(m).parents for m in files):
                roots.add(f)
    for f in map(Path, files):
        for s in site:
            if s in f.parents:
                top = s / f.relative_to(s).parts[0]
                roots.add(top)
                libs = s / f"{top.name}.libs"  # a repaired wheel's bundled libraries
                if libs.is_dir():
                    roots.add(libs)
    roots = {r for r in roots if not any(d in r.parents for d in roots)}  # a library inside a counted directory
    total = 0
    for r in roots:
        items = r.rglob("*") if r.is_dir() else [r]
        total += sum(p.stat().st_size for p in items
                     if p.is_file() and not (r.name == "vm" and "tools" in p.relative_to(r).parts[:1]))
    return total / 1e6


def features_matrix(out: Path, model: str, rows: int) -> Path:
    """A feature matrix of the model's input shape (its dynamic dimension = ``rows``), for the
    baseline's run (its values do not change the cost)."""
    import numpy as np
    import onnxruntime as ort

    spec = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else rows for d in spec.shape]
    path = out / "features.npy"
    np.save(path, np.random.default_rng(0).random(shape, dtype=np.float32))
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as td:
        out = Path(td)
        keys.generate(out / "keys")
        build_bundle.main(out, out / "keys", targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"])
        request = big_request()
        (out / "request.msgpack").write_bytes(msgpack.packb(request, use_bin_type=True))
        paths = {"keys": str(out / "keys"), "bundle": str(out / "home-rerank.evb"),
                 "payload": str(out / "request.msgpack"), "model": str(out / "ranking-build" / "ranker.onnx")}
        paths["features"] = str(features_matrix(out, paths["model"], len(request["candidates"]["item_id"])))
        runs: dict[str, list[dict]] = {"thread": [], "process": []}
        base: list[float] = []
        baseline_sample(paths)  # the discarded round: caches written, files in the page cache
        for mode in runs:
            edgevm_sample(mode, paths)
        for _ in range(SAMPLES):
            base.append(baseline_sample(paths))
            for mode in runs:
                runs[mode].append(edgevm_sample(mode, paths))
    med = statistics.median
    result = {
        "to_first_result_ms": {m: round(med(r["total_ms"] for r in rs), 1) for m, rs in runs.items()},
        "stages_ms": {m: {s: round(med(r["stages"][s] for r in rs), 1) for s in STAGES} for m, rs in runs.items()},
        "baseline_ms": round(med(base), 1),
        "maxrss_mb": {m: round(med(r["maxrss_mb"] for r in rs), 1) for m, rs in runs.items()},
        "worker_hwm_mb": round(med(r["worker_hwm_mb"] for r in runs["process"]), 1),
        "install_mb": round(install_mb(runs["thread"][0]["files"], runs["thread"][0]["mapped"]), 1),
        "samples": SAMPLES,
    }
    result["ratio"] = {m: round(v / result["baseline_ms"], 3) for m, v in result["to_first_result_ms"].items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
