"""One ranking inference through ``Runtime``, stage by stage, against its floor.

e2e: ``Runtime.infer_msgpack`` (msgpack request in, msgpack result out: what the C API calls), on
the example bundle with a realistic request (a user's recent events and a slate of candidates).
Stages, measured in the same run on the same request: decode input, native ops, model run, the
rest of the script, encode output; the remainder of e2e is the runtime's own overhead (dispatch
to a worker thread, deadline bookkeeping). floor: the same feature script run as plain Python
with the same native ops and the same ONNX model on a direct ONNX Runtime session: no sandbox,
no msgpack, no worker thread.

Last line: JSON with ``e2e_p50_ms``, ``e2e_p99_ms``, ``floor_p50_ms``, ``ratio_p50`` and the stages.
Target: ratio_p50 <= 1.5.
"""
from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.ranking import build_bundle, clickstream  # noqa: E402
from vm.bundle import keys  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402
from vm.ml import models, ops  # noqa: E402

ROUNDS = 400


class Clock:
    """Accumulates time spent inside wrapped functions during one inference."""

    def __init__(self) -> None:
        self.spent = {"ops": 0.0, "model": 0.0}

    def wrap(self, stage: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[stage] += time.perf_counter() - t0

        return timed


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def big_request(seed: int = 3) -> dict:
    """A heavy user: 500 recent events, 150 candidates."""
    catalog = clickstream.generate_catalog(seed)
    history = clickstream.generate_history(catalog, 30, seed)
    user = max(history, key=lambda u: len(u["events"]))
    rng = np.random.default_rng(seed)
    for _ in range(50):
        slate = clickstream.make_slate(catalog, user["events"], 150, rng)
        if slate and len(slate["context"]) >= 300:
            break
    slate["context"] = slate["context"][-500:]
    return build_bundle.to_request(slate)


def plain_script(src_dir: Path, session: models.ModelSession):
    """The bundle's feature script as ordinary Python: the same ops and model, no sandbox."""
    edge = types.ModuleType("edge")
    edge.ops = ops
    edge.model = lambda name: session
    sys.modules["edge"] = edge
    sys.path.insert(0, str(src_dir))
    for name in ("features", "catalog_constants"):
        sys.modules.pop(name, None)
    import features  # noqa: PLC0415 - the bundle's script, from its build directory

    return features


def main() -> None:
    with tempfile.TemporaryDirectory() as td:
        out = Path(td)
        keys.generate(out / "keys")
        build_bundle.main(out, out / "keys", targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"])
        request = big_request()
        payload = msgpack.packb(request, use_bin_type=True)

        clock = Clock()
        for name in ops.__all__:
            if callable(getattr(ops, name)) and not isinstance(getattr(ops, name), type):
                setattr(ops, name, clock.wrap("ops", getattr(ops, name)))
        models.ModelSession.run = clock.wrap("model", models.ModelSession.run)

        rt = Runtime({"keys": out / "keys", "deadline_ms": 1000, "workers": 1, "isolation": "thread"})
        rt.load(out / "home-rerank.evb")
        session = models.ModelSession("ranker", (out / "ranking-src" / "ranker.onnx").read_bytes(),
                                      models.DeviceProfile.from_config(None))
        script = plain_script(out / "ranking-src", session)

        def e2e() -> bytes:
            return rt.infer_msgpack("home", "rerank", payload)

        def floor() -> dict:
            return script.rerank(request)

        reference = msgpack.unpackb(e2e())
        direct = floor()
        assert reference["items"] == direct["items"].tolist(), "sandboxed and plain runs disagree"

        rows: dict[str, list[float]] = {k: [] for k in
                                        ("e2e", "floor", "decode", "encode", "ops", "model", "script", "runtime")}
        for _ in range(30):
            e2e()
            floor()
        for _ in range(ROUNDS):
            clock.spent = {"ops": 0.0, "model": 0.0}
            t0 = time.perf_counter()
            result = e2e()
            t_e2e = time.perf_counter() - t0
            spent = dict(clock.spent)
            t0 = time.perf_counter()
            floor()
            rows["floor"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            inputs = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            t_dec = time.perf_counter() - t0
            plain = msgpack.unpackb(result)
            t0 = time.perf_counter()
            msgpack.packb(plain, use_bin_type=True)
            t_enc = time.perf_counter() - t0
            clock.spent = {"ops": 0.0, "model": 0.0}
            t0 = time.perf_counter()
            script.rerank(inputs)
            t_script = time.perf_counter() - t0 - clock.spent["ops"] - clock.spent["model"]
            rows["e2e"].append(t_e2e)
            rows["decode"].append(t_dec)
            rows["encode"].append(t_enc)
            rows["ops"].append(spent["ops"])
            rows["model"].append(spent["model"])
            rows["script"].append(t_script)
            rows["runtime"].append(t_e2e - t_dec - t_enc - spent["ops"] - spent["model"] - t_script)
        rt.close()

    n_events, n_cands = len(request["events"]["ts"]), len(request["candidates"]["item_id"])
    print(f"request: {n_events} events, {n_cands} candidates, {len(payload)} bytes of msgpack")
    print(f"{'stage':10s} {'p50 ms':>9s} {'p99 ms':>9s}")
    stages = {}
    for name, samples in rows.items():
        stages[name] = {"p50_ms": round(pct(samples, 0.5), 4), "p99_ms": round(pct(samples, 0.99), 4)}
        print(f"{name:10s} {pct(samples, 0.5):9.4f} {pct(samples, 0.99):9.4f}")
    ratio = pct(rows["e2e"], 0.5) / pct(rows["floor"], 0.5)
    print(json.dumps({"e2e_p50_ms": stages["e2e"]["p50_ms"], "e2e_p99_ms": stages["e2e"]["p99_ms"],
                      "floor_p50_ms": stages["floor"]["p50_ms"], "ratio_p50": round(ratio, 3),
                      "events": n_events, "candidates": n_cands, "stages": stages}))


if __name__ == "__main__":
    main()
