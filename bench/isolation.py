"""What process isolation costs, against thread mode, measured in the same run.

- e2e: the ranking inference (the example bundle, a heavy user's request) through
  ``Runtime.infer_msgpack``, p50 in process mode / p50 in thread mode (blocks alternate; the median
  block of each counts). Target: e2e_ratio <= 1.15.
- respawn: SIGKILL the worker serving a bundle, then time until the next call is served (the warm
  spare takes over). Target: respawn_p50_ms <= 10.
- worker memory: the unique memory (USS: private clean + dirty pages) of a worker, which is what
  one more worker costs on top of the zygote it was forked from. Target: worker_rss_mb <= 15.
- scaling: 2 concurrent callers on 2 workers / 1 caller on 1 worker (bench/parallel.py's measure),
  in process mode (and in thread mode for comparison). Target: scaling >= 1.7 on 2 cores.
- cold start: a new process -> Runtime -> load -> first inference, both modes.

Last line: JSON with e2e_ratio, respawn_p50_ms, worker_rss_mb, scaling, cold_start_ms and details.
"""
from __future__ import annotations

import json
import os
import signal
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
from parallel import throughput  # noqa: E402

from examples.ranking import build_bundle  # noqa: E402
from vm.bundle import keys  # noqa: E402
from vm.errors import EdgeError  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402

ROUNDS = 300
BLOCKS = 3
RESPAWNS = 15


def p50_ms(rt: Runtime, payload: bytes, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        rt.infer_msgpack("home", "rerank", payload)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def pool(rt: Runtime) -> dict:
    return next(iter(rt.metrics()["isolation"]["pools"].values()))


def wait_spare(rt: Runtime) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        s = pool(rt)
        if s["spares"] >= 1 and s["starting"] == 0 and s["idle"] == 1:
            return
        time.sleep(0.005)
    raise RuntimeError("no spare worker became ready")


def respawn_ms(rt: Runtime, payload: bytes) -> float:
    wait_spare(rt)
    (pid,) = pool(rt)["pids"]
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while True:
        try:
            rt.infer_msgpack("home", "rerank", payload)
            return (time.perf_counter() - t0) * 1000
        except EdgeError:
            continue  # the call reached the dead worker before its exit was known


def uss_mb(pid: int) -> float:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0])
    return (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


COLD = """
import sys, time
t0 = time.monotonic()
import msgpack
from vm import Runtime
rt = Runtime({{"keys": {keys!r}, "isolation": {mode!r}, "deadline_ms": 5000}})
t1 = time.monotonic()
rt.load({bundle!r})
t2 = time.monotonic()
rt.infer_msgpack("home", "rerank", open({payload!r}, "rb").read())
t3 = time.monotonic()
print(f"{{(t1 - t0) * 1000:.1f}} {{(t2 - t1) * 1000:.1f}} {{(t3 - t2) * 1000:.1f}}", flush=True)
rt.close()
"""


def cold_start(mode: str, keys_dir: Path, bundle: Path, payload: Path) -> dict:
    code = COLD.format(keys=str(keys_dir), mode=mode, bundle=str(bundle), payload=str(payload))
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    total = (time.monotonic() - t0) * 1000
    proc.wait(60)
    runtime, load, first = (float(x) for x in line.split())
    return {"total_ms": total, "runtime_ms": runtime, "load_ms": load, "first_infer_ms": first}


def main() -> None:
    with tempfile.TemporaryDirectory() as td:
        out = Path(td)
        keys.generate(out / "keys")
        build_bundle.main(out, out / "keys", targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"])
        bundle = out / "home-rerank.evb"
        payload = msgpack.packb(big_request(), use_bin_type=True)
        (out / "request.msgpack").write_bytes(payload)
        runtimes = {mode: Runtime({"keys": out / "keys", "deadline_ms": 5000, "workers": 1, "isolation": mode})
                    for mode in ("thread", "process")}
        for rt in runtimes.values():
            rt.load(bundle)
            assert rt.infer_msgpack("home", "rerank", payload) == runtimes["thread"].infer_msgpack(
                "home", "rerank", payload), "the modes disagree"
            p50_ms(rt, payload, 50)
        e2e: dict[str, list[float]] = {"thread": [], "process": []}
        for _ in range(BLOCKS):
            for mode, rt in runtimes.items():
                e2e[mode].append(p50_ms(rt, payload, ROUNDS))
        thread_p50, process_p50 = statistics.median(e2e["thread"]), statistics.median(e2e["process"])
        print(f"e2e p50: thread {thread_p50:.3f} ms, process {process_p50:.3f} ms")

        rt = runtimes["process"]
        wait_spare(rt)
        stats = pool(rt)
        workers = stats["pids"] + stats["spare_pids"]
        uss = [uss_mb(p) for p in workers]
        pss = [pss_mb(p) for p in workers]
        zygote = rt.metrics()["isolation"]["zygote_pid"]
        print(f"worker USS {uss} MB, PSS {pss} MB; zygote PSS {pss_mb(zygote):.1f} MB")
        respawns = [respawn_ms(rt, payload) for _ in range(RESPAWNS)]
        print(f"respawn ms: {[round(r, 2) for r in respawns]}")
        for r in runtimes.values():
            r.close()

        scaling = {}
        for mode in ("process", "thread"):
            one = [throughput(bundle, out / "keys", 1, payload, mode) for _ in range(2)]
            two = [throughput(bundle, out / "keys", 2, payload, mode) for _ in range(2)]
            scaling[mode] = {"throughput_1": round(statistics.median(one), 1),
                             "throughput_2": round(statistics.median(two), 1),
                             "scaling": round(statistics.median(two) / statistics.median(one), 3)}
            print(f"scaling {mode}: {scaling[mode]}")

        cold = {mode: [cold_start(mode, out / "keys", bundle, out / "request.msgpack") for _ in range(3)]
                for mode in ("thread", "process")}
        cold_ms = {mode: round(statistics.median(c["total_ms"] for c in runs), 1) for mode, runs in cold.items()}
        cold_split = {mode: {k: round(statistics.median(c[k] for c in runs), 1) for k in runs[0]}
                      for mode, runs in cold.items()}
        print(f"cold start: {cold_split}")

    print(json.dumps({
        "e2e_ratio": round(process_p50 / thread_p50, 3), "e2e_p50_ms": {"thread": round(thread_p50, 4),
                                                                       "process": round(process_p50, 4)},
        "respawn_p50_ms": round(statistics.median(respawns), 2), "respawn_max_ms": round(max(respawns), 2),
        "worker_rss_mb": round(statistics.median(uss), 1), "worker_pss_mb": round(statistics.median(pss), 1),
        "scaling": scaling["process"]["scaling"], "scaling_thread_mode": scaling["thread"]["scaling"],
        "throughput": scaling, "cold_start_ms": cold_ms, "cold_start_split_ms": cold_split,
    }))


if __name__ == "__main__":
    main()
