"""The edgevm demo (``make demo``): the whole path from feature script to on-device inference.

1. keygen: a server signing key and a device key pair;
2. build: generate clickstreams, train the ranker and the photo classifier, pack both bundles
   (bytecode for every CPython found, signed and encrypted);
3. inspect: what a device can see of a bundle without and with its keys;
4. run: the CLI loads a bundle as a device would and re-ranks a slate;
5. embed: a native C program links libedgevm, loads the bundles and serves inferences from
   several threads (when the C API is built);
6. latency: re-ranking and photo checks through the Python API, p50/p99;
7. the event store: the host app only tracks the user's events (sealed at rest); the ranking
   script reads its click history from the store (``edge.events.query``) and re-ranks the same.
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.photo import build_bundle as photo_build  # noqa: E402
from examples.ranking import build_bundle as ranking_build  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402

OUT = ROOT / "examples" / "out"
EDGEVM = [sys.executable, "-m", "vm.host.cli"]


def step(title: str) -> None:
    print(f"\n=== {title}")


def run_cli(*args: str) -> str:
    shown = " ".join(a if len(a) < 60 else "…" + a[-40:] for a in args)
    print(f"$ edgevm {shown}")
    proc = subprocess.run([*EDGEVM, *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr)
        raise SystemExit(f"edgevm {args[0]} failed")
    return proc.stdout + proc.stderr


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))]


def c_host_scenario(keys_dir: Path) -> None:
    host = ROOT / "tests" / "host" / "run_demo.py"
    if not host.exists():
        print("(the C host is not built in this checkout)")
        return
    proc = subprocess.run([sys.executable, str(host), "--keys", str(keys_dir), "--out", str(OUT)], cwd=ROOT,
                          capture_output=True, text=True)
    print(proc.stdout.rstrip())
    if proc.returncode != 0:
        print(proc.stderr)
        raise SystemExit("the C host scenario failed")


def main() -> None:
    t_start = time.perf_counter()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    keys_dir = OUT / "keys"

    step("1. keygen")
    print(run_cli("keygen", "--out", str(keys_dir)).rstrip())

    step("2. build the example bundles (generate data, train, pack)")
    rank = ranking_build.main(OUT, keys_dir)
    m = rank["model"]
    print(f"ranking: {m['train_requests']} training requests, ranker AUC on held-out users {m['test_auc']:.3f} "
          f"(without this session's events {m['test_auc_without_session_events']:.3f}, "
          f"popularity alone {m['test_auc_popularity_only']:.3f})")
    print(f"  packed {rank['bundle']} ({rank['bytes']} bytes) for CPython {', '.join(rank['targets'])}")
    photo = photo_build.main(OUT, keys_dir)
    print(f"photo check: classifier accuracy on held-out photos {photo['model']['test_accuracy']:.3f}")
    print(f"  packed {photo['bundle']} ({photo['bytes']} bytes)")

    step("3. inspect (without keys: header only, signature not checked; with keys: verified contents)")
    bare = json.loads(run_cli("inspect", str(OUT / "home-rerank.evb")))
    print(f"  format {bare['format_version']}, signed by key {bare['sign_key_id']}, sealed to key "
          f"{bare['seal_key_id']}, targets {[t['python'] for t in bare['header_unverified']['targets']]}")
    full = json.loads(run_cli("inspect", str(OUT / "home-rerank.evb"), "--keys", str(keys_dir)))
    ranker = full["contents"]["models"]["ranker"]
    print(f"  signature {full['signature']}; modules {sorted(full['contents']['modules'])}; model ranker "
          f"{ranker['bytes']} bytes, inputs {[(i['name'], i['shape']) for i in ranker['inputs']]}")

    step("4. run a re-ranking request as the device would")
    out = json.loads(run_cli("run", str(OUT / "home-rerank.evb"), "--keys", str(keys_dir), "--system", "home",
                             "--business", "rerank", "--input", str(OUT / "request.json")))
    print(f"  top items {out['items'][:5]}, scores {[round(s, 4) for s in out['scores'][:5]]}")

    step("5. embed: a C program linked against libedgevm")
    c_host_scenario(keys_dir)

    step("6. latency through the Python API")
    request = json.loads((OUT / "request.json").read_text())
    samples = json.loads((OUT / "photo-samples.json").read_text())
    with Runtime({"keys": keys_dir, "deadline_ms": 200}) as rt:
        t0 = time.perf_counter()
        rt.load(OUT / "home-rerank.evb")
        rt.load(OUT / "photo-check.evb")
        load_ms = (time.perf_counter() - t0) * 1000
        times = []
        for _ in range(300):
            t = time.perf_counter()
            rt.infer("home", "rerank", request)
            times.append((time.perf_counter() - t) * 1000)
        p50, p99 = percentiles(times[50:])
        n_cand = len(request["candidates"]["item_id"])
        print(f"  loaded both bundles in {load_ms:.1f} ms (verify, decrypt, check bytecode, create sessions)")
        print(f"  re-rank {n_cand} candidates from {len(request['events']['ts'])} events: p50 {p50:.3f} ms, "
              f"p99 {p99:.3f} ms")
        correct, times = 0, []
        for s in samples * 40:
            t = time.perf_counter()
            res = rt.infer("upload", "check", {"height": s["height"], "width": s["width"], "pixels": bytes(s["pixels"])})
            times.append((time.perf_counter() - t) * 1000)
            correct += res["label"] == s["label"]
        p50, p99 = percentiles(times)
        print(f"  photo check (48x48 frame -> resize -> classify): p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
              f"{correct}/{len(samples) * 40} labels right")
    step("7. the event store: the host tracks events, the script queries them")
    events = json.loads((OUT / "events.json").read_text())
    store_request = json.loads((OUT / "store-request.json").read_text())
    data = {"dir": str(OUT / "data"), "tables": {"clicks": ranking_build.CLICKS_TABLE}}
    with Runtime({"keys": keys_dir, "deadline_ms": 200, "data": data}) as rt:
        rt.load(OUT / "home-rerank.evb")
        t0 = time.perf_counter()
        for event in events:
            rt.track(event)
        track_ms = (time.perf_counter() - t0) * 1000
        from_inputs = rt.infer("home", "rerank", request)
        times = []
        for _ in range(300):
            t = time.perf_counter()
            from_store = rt.infer("home", "rerank", store_request)
            times.append((time.perf_counter() - t) * 1000)
        p50, p99 = percentiles(times[50:])
        stored = rt.metrics()["events"]["tables"]["clicks"]
    files = sorted(p.name for p in (OUT / "data").iterdir())
    print(f"  tracked {len(events)} events in {track_ms:.1f} ms into {', '.join(files)} "
          f"(sealed: only ts, type and page_id in clear); {stored['stored']} stored")
    print(f"  request without events ({sorted(store_request)}): top items {from_store['items'][:5]}; "
          f"the same as with the events in the request: {from_store['items'] == from_inputs['items']}")
    print(f"  re-rank reading the history from the store (process mode, over the worker's channel): "
          f"p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    if from_store["items"] != from_inputs["items"]:
        raise SystemExit("the store's history ranked differently from the request's")
    print(f"\ndemo finished in {time.perf_counter() - t_start:.1f} s; artifacts in {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
