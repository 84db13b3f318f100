"""Event store benchmark: ingestion (batched, durable), trailing-window queries on a 100,000-event
table (from the file, from the ring), bytes per event (plain, sealed), what a query costs a
script in thread and process mode, and in process mode a trailing-window query over the channel
against the same query declared by the entry (``events.prefetch``: the host reads it before
dispatch and sends the rows with the request), each beside a baseline measured in the same run: raw
``sqlite3`` inserts (executemany, one commit per batch) and raw ``sqlite3`` selects of the same
window on the same file.

Targets (issue 10): batched ingest >= 50,000 events/s; query p99 < 1 ms; ring p99 < 0.1 ms.
The last line is one JSON object.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vm.bundle import keys as keys_mod  # noqa: E402
from vm.bundle.tables import parse_bundle_events  # noqa: E402
from vm.host.runtime import Runtime  # noqa: E402
from vm.tools.packer import pack  # noqa: E402

N = 100_000
SPAN_MS = 86_400_000            # the table covers a day
WINDOW_MS = 60_000              # a trailing one-minute window: about 70 events
FIELDS = {"type": "str", "page_id": "str", "item_id": "int", "price": "float", "query_text": "str"}
TYPES = ("page_view", "click", "add_to_cart", "purchase")


def event(i: int, t0: int) -> dict:
    return {"table": "clicks", "ts": t0 + i * SPAN_MS // N, "type": TYPES[i % 4], "page_id": "JD_HOME",
            "item_id": i % 2000, "price": 10.0 + i % 97, "query_text": f"red running shoes {i % 50}"}


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))]


def config(keys: Path, data: Path, *, sensitive: bool, durability: str = "batched", ring: int = 4096) -> dict:
    table = {"fields": FIELDS, "sensitive": sensitive, "indexes": ["type"] if sensitive else []}
    return {"keys": keys, "isolation": "thread",
            "data": {"dir": str(data), "durability": durability, "ring_events": ring, "tables": {"clicks": table}}}


def ingest(rt: Runtime, n: int, t0: int) -> float:
    """Events per second through Runtime.track, until all are committed."""
    events = [event(i, t0) for i in range(n)]
    start = time.perf_counter()
    for e in events:
        rt.track(e)
    rt._store.flush()
    return n / (time.perf_counter() - start)


def raw_insert_eps(path: Path, n: int, t0: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE events (ts INTEGER, type TEXT, page_id TEXT, item_id INTEGER, price REAL, q TEXT)")
    db.execute("CREATE INDEX events_ts ON events (ts)")
    rows = [tuple(event(i, t0)[k] for k in ("ts", "type", "page_id", "item_id", "price", "query_text"))
            for i in range(n)]
    start = time.perf_counter()
    for k in range(0, n, 1000):
        db.execute("BEGIN")
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows[k:k + 1000])
        db.execute("COMMIT")
    eps = n / (time.perf_counter() - start)
    db.close()
    return eps


def query_ms(access, since: int, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        got = access.query("clicks", {"since_ms": since}, time.monotonic() + 5)
        times.append((time.perf_counter() - t) * 1000)
    assert len(got["ts"]) > 0
    return times


def raw_query_ms(path: Path, since: int, repeats: int) -> list[float]:
    db = sqlite3.connect(path)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        rows = db.execute("SELECT ts, type, page_id, item_id, price, query_text FROM events WHERE ts >= ? "
                          "ORDER BY ts DESC, rowid DESC LIMIT 100000", (since,)).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    assert rows
    db.close()
    return times


def file_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.iterdir())


SCRIPT = """
import edge

def entry(inputs):
    n = 0
    for _ in range(inputs["queries"]):
        n += len(edge.events.query("clicks", since_ms=inputs["since"])["ts"])
    return n
"""


def script_query_ms(keys: Path, data: Path, bundle: Path, mode: str, since: int) -> float:
    """Per-query cost inside a script call: (a call with 20 queries - a call with none) / 20."""
    cfg = {**config(keys, data, sensitive=False, ring=0), "isolation": mode, "deadline_ms": 5000}
    with Runtime(cfg) as rt:
        rt.load(bundle)
        per = []
        for _ in range(60):
            t = time.perf_counter()
            rt.infer("s", "b", {"queries": 20, "since": since})
            busy = time.perf_counter() - t
            t = time.perf_counter()
            rt.infer("s", "b", {"queries": 0, "since": since})
            idle = time.perf_counter() - t
            per.append((busy - idle) / 20 * 1000)
    return statistics.median(per[10:])


WINDOW_SCRIPT = """
import edge

def entry(inputs):
    n = 0
    for _ in range(inputs["queries"]):
        n += len(edge.events.query("clicks", since_ms=edge.now_ms() - inputs["window"], fields=["ts", "item_id"])["ts"])
    return n
"""


def process_window_ms(keys: Path, work: Path, repeats: int = 400) -> dict:
    """Process mode, a table of N events ending now: one trailing-window query per call, over the
    channel and declared (``events.prefetch``, its read included in the call); each call's time minus
    the median of an empty call of the undeclared bundle (the same run's baseline)."""
    src = work / "src-window"
    src.mkdir()
    (src / "features.py").write_text(WINDOW_SCRIPT)
    bundles = {}
    for kind, events in (("channel", {"reads": ["clicks"]}),
                         ("declared", {"reads": ["clicks"], "prefetch": {"b": [
                             {"table": "clicks", "window_ms": WINDOW_MS, "fields": ["ts", "item_id"]}]}})):
        (src / "bundle.json").write_text(json.dumps({"name": f"w{kind}", "version": "1.0.0", "system": kind,
                                                     "entries": {"b": "features:entry"}, "events": events}))
        bundles[kind] = pack(src, keys, work / f"w-{kind}.evb",
                             targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"]).path
    cfg = {**config(keys, work / "data-window", sensitive=False, ring=0), "isolation": "process", "deadline_ms": 5000}
    out: dict = {}
    with Runtime(cfg) as rt:
        ingest(rt, N, time.time_ns() // 1_000_000 - SPAN_MS)
        for b in bundles.values():
            rt.load(b)
        times: dict[str, list[float]] = {"empty": [], "channel": [], "declared": []}
        rows = 0
        for _ in range(repeats):
            for kind, system, queries in (("empty", "channel", 0), ("channel", "channel", 1), ("declared", "declared", 1)):
                t = time.perf_counter()
                n = rt.infer(system, "b", {"queries": queries, "window": WINDOW_MS})
                times[kind].append((time.perf_counter() - t) * 1000)
                rows = max(rows, n)
        frames = {name.split()[0]: p["events_frames"] for name, p in rt.metrics()["isolation"]["pools"].items()}
    assert rows > 0 and frames["wdeclared"] == 0 and frames["wchannel"] == repeats, frames
    base = statistics.median(times["empty"][repeats // 10:])
    for kind in ("channel", "declared"):
        per = [t - base for t in times[kind][repeats // 10:]]
        out[f"query_p50_ms_{kind}"] = round(statistics.median(per), 4)
        out[f"query_p99_ms_{kind}"] = round(pct(per, 0.99), 4)
    out["process_empty_call_p50_ms"] = round(base, 4)
    return out


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="edgevm-bench-events-"))
    try:
        keys = work / "keys"
        keys_mod.generate(keys)
        t0 = time.time_ns() // 1_000_000 - SPAN_MS
        since = t0 + SPAN_MS - WINDOW_MS
        out: dict = {}
        baseline_eps = raw_insert_eps(work / "raw.db", N, t0)
        for sensitive in (False, True):
            kind = "sealed" if sensitive else "plain"
            data = work / f"data-{kind}"
            with Runtime(config(keys, data, sensitive=sensitive, ring=0)) as rt:
                out[f"ingest_eps_{kind}"] = round(ingest(rt, N, t0))
                access = rt._store.access("bench", parse_bundle_events({"reads": ["clicks"]}))
                disk = query_ms(access, since, 2000)
                out[f"query_p50_ms_{kind}"] = round(statistics.median(disk), 4)
                out[f"query_p99_ms_{kind}"] = round(pct(disk, 0.99), 4)
            out[f"bytes_per_event_{kind}"] = round(file_bytes(data) / N, 1)
        raw = raw_query_ms(work / "data-plain" / "clicks.db", since, 2000)
        with Runtime(config(keys, work / "data-ring", sensitive=True)) as rt:
            ingest(rt, 10_000, t0 + SPAN_MS - 10_000 * SPAN_MS // N)
            access = rt._store.access("bench", parse_bundle_events({"reads": ["clicks"]}))
            ring = query_ms(access, since, 5000)
        with Runtime(config(keys, work / "data-durable", sensitive=True, durability="durable")) as rt:
            durable_eps = ingest(rt, 300, t0)

        src = work / "src"
        src.mkdir()
        (src / "features.py").write_text(SCRIPT)
        (src / "bundle.json").write_text(json.dumps({"name": "q", "version": "1.0.0", "system": "s",
                                                     "entries": {"b": "features:entry"},
                                                     "events": {"reads": ["clicks"]}}))
        bundle = pack(src, keys, work / "q.evb", targets=[f"{sys.version_info[0]}.{sys.version_info[1]}"]).path
        script = {mode: round(script_query_ms(keys, work / "data-plain", bundle, mode, since), 4)
                  for mode in ("thread", "process")}
        result = {
            "ingest_eps": out["ingest_eps_sealed"], "ingest_eps_plain": out["ingest_eps_plain"],
            "ingest_eps_durable": round(durable_eps, 1),
            "baseline_raw_insert_eps": round(baseline_eps), "ingest_ratio": round(out["ingest_eps_sealed"] / baseline_eps, 3),
            "query_p50_ms": out["query_p50_ms_plain"], "query_p99_ms": out["query_p99_ms_plain"],
            "query_p50_ms_sealed": out["query_p50_ms_sealed"], "query_p99_ms_sealed": out["query_p99_ms_sealed"],
            "baseline_raw_query_p50_ms": round(statistics.median(raw), 4),
            "baseline_raw_query_p99_ms": round(pct(raw, 0.99), 4),
            "query_ratio": round(out["query_p50_ms_plain"] / statistics.median(raw), 3),
            "ring_p50_ms": round(statistics.median(ring), 4), "ring_p99_ms": round(pct(ring, 0.99), 4),
            "bytes_per_event": {"plain": out["bytes_per_event_plain"], "sealed": out["bytes_per_event_sealed"]},
            "script_query_ms": script,
            **process_window_ms(keys, work),
            "window_events": int(WINDOW_MS * N / SPAN_MS), "table_events": N,
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
