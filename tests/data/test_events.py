"""The event store through the runtime: track() stores, scripts query (thread and process mode),
bad events are refused whole and counted, sensitive fields never reach the disk in clear,
retention runs beside readers, queries stop at the call's deadline. Real SQLite files throughout."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from vm.errors import BadInput, DecryptError, NotFound, PolicyError, ResourceExhausted, Timeout
from vm.host.runtime import Runtime

FIELDS = {"type": "str", "page_id": "str", "item_id": "int", "price": "float", "query_text": "str", "liked": "bool"}
TABLES = {
    "clicks": {"fields": FIELDS, "sensitive": True, "indexes": ["type"]},
    "plain": {"fields": {"n": "int", "label": "str"}},
}
READER = """
import edge

def entry(inputs):
    args = inputs.get("args", {})
    return edge.events.query(inputs["table"], **args)

def sql(inputs):
    return edge.events.sql(inputs["q"], inputs.get("params", []), inputs.get("limit"))

def append(inputs):
    edge.events.append(inputs["table"], inputs["event"])
    return edge.events.query(inputs["table"])
"""
ENTRIES = {"q": "features:entry", "sql": "features:sql", "append": "features:append"}
EVENTS = {"reads": ["clicks", "plain"], "tables": {"scratch": {"fields": {"score": "float"}}}}


def config(keys_dir: Path, data_dir: Path, mode: str = "thread", **data: object) -> dict:
    return {"keys": keys_dir, "isolation": mode, "deadline_ms": 2000,
            "data": {"dir": str(data_dir), "tables": TABLES, **data}}


def click(i: int, **kw: object) -> dict:
    return {"table": "clicks", "ts": 1_000_000 + i, "type": "click" if i % 3 else "page_view",
            "page_id": "JD_HOME", "item_id": i, "price": 10.0 + i, "query_text": f"secret query {i}",
            "liked": i % 2 == 0, **kw}


@pytest.fixture
def reader(make_bundle) -> Path:
    return make_bundle({"features.py": READER}, name="reader", entries=ENTRIES, extra={"events": EVENTS})


def count(rt: Runtime) -> int:
    return len(rt.infer("s", "q", {"table": "clicks", "args": {"fields": ["ts"]}})["ts"])


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_tracked_events_are_stored_and_queried_by_scripts(mode: str, keys_dir: Path, tmp_path: Path,
                                                         reader: Path) -> None:
    with Runtime(config(keys_dir, tmp_path / "data", mode)) as rt:
        rt.load(reader)
        for i in range(30):
            assert rt.track(click(i)) == []  # stored; no trigger matches
        got = rt.infer("s", "q", {"table": "clicks", "args": {"since_ms": 1_000_010, "where": {"type": "click"},
                                                             "fields": ["ts", "item_id", "query_text"]}})
        want = [i for i in range(10, 30) if i % 3]
        assert got["item_id"] == want and got["ts"] == [1_000_000 + i for i in want]
        assert got["query_text"] == [f"secret query {i}" for i in want]
        last = rt.infer("s", "q", {"table": "clicks", "args": {"limit": 2, "fields": ["item_id", "liked"]}})
        assert last == {"item_id": [28, 29], "liked": [True, False]}
        assert rt.infer("s", "append", {"table": "scratch", "event": {"score": 0.5}})["score"] == [0.5]
        rows = rt.infer("s", "sql", {"q": "SELECT type, count(*) AS n FROM clicks WHERE ts >= ? GROUP BY type "
                                          "ORDER BY type", "params": [1_000_000]})
        assert rows == {"type": ["click", "page_view"], "n": [20, 10]}
        assert rt.metrics()["events"]["tables"]["clicks"]["stored"] == 30


def test_query_columns_are_numpy_ready_for_window_ops(keys_dir: Path, tmp_path: Path, make_bundle) -> None:
    src = """
    import edge
    import numpy as np

    def entry(inputs):
        ev = edge.events.query("clicks", since_ms=0, fields=["ts", "item_id", "price", "type"])
        kinds = [type(ev[k]).__name__ + ":" + ev[k].dtype.kind for k in ("ts", "item_id", "price", "type")]
        keys = (ev["item_id"] % 4).astype(np.int64)
        agg = edge.ops.window_agg_grouped(keys, ev["ts"], ev["price"], int(inputs["now"]), [1000], 4)
        return {"kinds": kinds, "sum": float(np.nansum(agg[:, 0, 1]))}
    """
    bundle = make_bundle({"features.py": src}, entries={"b": "features:entry"}, extra={"events": {"reads": ["clicks"]}})
    with Runtime(config(keys_dir, tmp_path / "data")) as rt:
        rt.load(bundle)
        for i in range(20):
            rt.track(click(i))
        out = rt.infer("s", "b", {"now": 1_000_020})
    assert out["kinds"] == ["ndarray:i", "ndarray:i", "ndarray:f", "ndarray:U"]
    assert out["sum"] == pytest.approx(sum(10.0 + i for i in range(20)))


def test_ring_and_disk_answer_the_same(keys_dir: Path, tmp_path: Path, reader: Path) -> None:
    """A window the ring covers is answered from memory; reopened (empty ring) from disk: the same."""
    args = {"since_ms": 1_000_150, "where": {"type": ["click", "page_view"], "liked": True}, "limit": 500}
    cfg = config(keys_dir, tmp_path / "data", ring_events=100)
    with Runtime(cfg) as rt:
        rt.load(reader)
        for i in range(200):
            rt.track(click(i))
        from_ring = rt.infer("s", "q", {"table": "clicks", "args": args})
        older = rt.infer("s", "q", {"table": "clicks", "args": {**args, "since_ms": 1_000_050}})  # past the ring
    with Runtime(cfg) as rt:
        rt.load(reader)
        assert rt.infer("s", "q", {"table": "clicks", "args": args}) == from_ring
        assert rt.infer("s", "q", {"table": "clicks", "args": {**args, "since_ms": 1_000_050}}) == older
    assert from_ring["item_id"] == list(range(150, 200, 2))
    assert older["item_id"] == list(range(50, 200, 2))


BAD_EVENTS = {
    "unknown_table": ({**click(1), "table": "nope"}, "no table 'nope'"),
    "table_not_str": ({**click(1), "table": 7}, "no table 7"),
    "wrong_type_int": (click(1, item_id="7"), "'item_id' must be int"),
    "wrong_type_bool_as_int": (click(1, item_id=True), "'item_id' must be int"),
    "int_overflow": (click(1, item_id=1 << 63), "int64"),
    "wrong_type_str": (click(1, type=3), "a string 'type'"),  # refused by the trigger check, before the store
    "wrong_type_bool": (click(1, liked=1), "'liked' must be bool"),
    "missing_field": ({k: v for k, v in click(1).items() if k != "price"}, "no field 'price'"),
    "unknown_field": (click(1, extra=1), "unknown field"),
    "bad_ts": (click(1, ts=-5), "'ts' must be"),
    "oversized": (click(1, query_text="x" * 70_000), "exceeds the limit"),
}


@pytest.mark.parametrize("name", sorted(BAD_EVENTS))
def test_bad_events_are_refused_whole_and_counted(name: str, keys_dir: Path, tmp_path: Path, reader: Path,
                                                  make_bundle) -> None:
    event, message = BAD_EVENTS[name]
    trig = make_bundle({"features.py": "def entry(inputs):\n    return 1\n"}, name="trig", system="t",
                       extra={"triggers": [{"taskName": "b", "events": [{"type": t, "needPv": True}
                                                                        for t in ("click", "page_view")]}]})
    with Runtime(config(keys_dir, tmp_path / "data")) as rt:
        rt.load(reader)
        rt.load(trig)
        assert rt.track(click(0))  # stored, and its trigger fired
        with pytest.raises(BadInput, match=message):
            rt.track(event)
        with pytest.raises(BadInput, match=message):
            rt.track_msgpack(msgpack.packb(event))
        rt._store.flush()
        assert count(rt) == 1
        m = rt.metrics()["events"]
        assert sum(m["refused"].values()) == 2
        if name not in ("unknown_table", "table_not_str", "wrong_type_str"):
            assert m["tables"]["clicks"]["refused"] == 2


@pytest.mark.parametrize("payload", [b"\xc1", b"\x92\x01", b"\x81\xa5table", b"", b"\xdc\xff\xff"])
def test_invalid_msgpack_from_c_is_refused_and_counted(payload: bytes, keys_dir: Path, tmp_path: Path) -> None:
    with Runtime(config(keys_dir, tmp_path / "data")) as rt:
        with pytest.raises(BadInput):
            rt.track_msgpack(payload)
        refused = rt.metrics()["events"]["refused"]
        assert sum(refused.values()) == 1


def test_no_plaintext_of_sensitive_fields_in_any_file(keys_dir: Path, tmp_path: Path, reader: Path) -> None:
    data = tmp_path / "data"
    secrets = [f"hunter-{i:04d}-secret" for i in range(300)]
    with Runtime(config(keys_dir, data)) as rt:
        rt.load(reader)
        for i, s in enumerate(secrets):
            rt.track(click(i, query_text=s, page_id=f"PAGE-{s}", price=1234567.875))
        rt._store.flush()
        files = sorted(p for p in data.iterdir() if p.name.startswith("clicks"))
        assert {p.name for p in files} >= {"clicks.db", "clicks.db-wal", "clicks.db-shm"}
        blobs = [p.read_bytes() for p in files]  # while open: the WAL holds the recent pages
        assert rt.infer("s", "q", {"table": "clicks", "args": {"limit": 1, "fields": ["query_text"]}}) == \
            {"query_text": [secrets[-1]]}
    blobs += [p.read_bytes() for p in sorted(data.iterdir())]  # after close: checkpointed into the db
    assert any(b"click" in b for b in blobs)  # the index column is in clear (the check can fail)
    packed_price = msgpack.packb(1234567.875)
    for blob in blobs:
        for s in secrets:
            assert s.encode() not in blob and f"PAGE-{s}".encode() not in blob
        assert packed_price not in blob


def test_a_tampered_payload_is_a_decrypt_error(keys_dir: Path, tmp_path: Path, reader: Path) -> None:
    cfg = config(keys_dir, tmp_path / "data")
    with Runtime(cfg) as rt:
        for i in range(3):
            rt.track(click(i))
    db = sqlite3.connect(tmp_path / "data" / "clicks.db")
    db.execute("UPDATE events SET payload = (SELECT payload FROM events WHERE ts = 1000000) WHERE ts = 1000001")
    db.commit()
    db.close()
    with Runtime(cfg) as rt:
        rt.load(reader)
        with pytest.raises(DecryptError, match="another row"):
            rt.infer("s", "q", {"table": "clicks", "args": {"since_ms": 0}})
        assert rt.infer("s", "q", {"table": "clicks", "args": {"since_ms": 0, "fields": ["ts", "type"]}})["ts"] == \
            [1_000_000, 1_000_001, 1_000_002]


def test_a_host_table_whose_declaration_changed_is_refused(keys_dir: Path, tmp_path: Path) -> None:
    with Runtime(config(keys_dir, tmp_path / "data")):
        pass
    changed = config(keys_dir, tmp_path / "data")
    changed["data"]["tables"] = {"clicks": {"fields": {"type": "int"}}}
    with pytest.raises(BadInput, match="another declaration"):
        Runtime(changed)


def test_retention_prunes_under_concurrent_reads(keys_dir: Path, tmp_path: Path) -> None:
    from vm.bundle.tables import parse_bundle_events

    cfg = config(keys_dir, tmp_path / "data", ring_events=0, prune_interval_ms=86_400_000)
    cfg["data"]["tables"] = {"clicks": {**TABLES["clicks"], "max_rows": 2000, "max_age_ms": 86_400_000}}
    with Runtime(cfg) as rt:
        store = rt._store
        now = time.time_ns() // 1_000_000
        old = now - 2 * 86_400_000
        for i in range(15_000):  # 10,000 too old, then 5,000 recent of which 2,000 are kept
            rt.track(click(i, ts=(old if i < 10_000 else now) + i))
        store.flush()
        access = store.access("r", parse_bundle_events({"reads": ["clicks"]}))
        errors: list[BaseException] = []
        sizes: list[tuple[bool, int]] = []  # (the read began after prune() returned, rows seen)
        stop = threading.Event()
        pruned = threading.Event()

        def read() -> None:
            while not stop.is_set():
                try:
                    after = pruned.is_set()
                    got = access.query("clicks", {"fields": ["ts", "item_id"]}, time.monotonic() + 5)
                    assert np.all(np.diff(got["ts"]) > 0)
                    sizes.append((after, len(got["ts"])))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    return

        def wait_reads(n: int) -> None:
            end = time.monotonic() + 30
            while len(sizes) < n and not errors and time.monotonic() < end:
                time.sleep(0.005)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        wait_reads(3)
        store.prune()  # (the metrics count what either pruner removed)
        pruned.set()
        end = time.monotonic() + 30
        while sum(a for a, _ in sizes) < 3 and not errors and time.monotonic() < end:
            time.sleep(0.005)
        stop.set()
        for t in readers:
            t.join()
        assert not errors
        # Before prune() a read sees 5,000 rows, or fewer if the background pruner got there first
        # (it prunes once at start-up, whenever its thread first wakes): never a torn count.
        assert not sizes[0][0] and all(2000 <= n <= 5000 for _, n in sizes)
        late = [n for a, n in sizes if a]
        assert len(late) >= 3 and set(late) == {2000}
        final = access.query("clicks", {"fields": ["item_id"]}, time.monotonic() + 5)["item_id"]
        assert final.tolist() == list(range(13_000, 15_000))
        assert store.metrics()["tables"]["clicks"]["pruned"] == 13_000


def test_a_query_over_the_deadline_is_a_timeout(keys_dir: Path, tmp_path: Path, reader: Path) -> None:
    cfg = config(keys_dir, tmp_path / "data")
    cfg["deadline_ms"] = 100
    with Runtime(cfg) as rt:
        rt.load(reader)
        rt.track(click(1))
        long = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                "SELECT count(*) AS n FROM c, clicks")
        t0 = time.monotonic()
        with pytest.raises(Timeout):
            rt.infer("s", "sql", {"q": long})
        assert time.monotonic() - t0 < 30  # ended, not stuck (a bound far above the deadline)
        assert rt.infer("s", "sql", {"q": "SELECT count(*) AS n FROM clicks"}) == {"n": [1]}


def test_the_sql_form_has_a_row_limit(keys_dir: Path, tmp_path: Path, reader: Path) -> None:
    with Runtime(config(keys_dir, tmp_path / "data")) as rt:
        rt.load(reader)
        for i in range(20):
            rt.track(click(i))
        assert len(rt.infer("s", "sql", {"q": "SELECT ts FROM clicks", "limit": 20})["ts"]) == 20
        with pytest.raises(ResourceExhausted, match="more than 5 rows"):
            rt.infer("s", "sql", {"q": "SELECT ts FROM clicks", "limit": 5})


def test_without_a_store_scripts_get_not_found(keys_dir: Path, make_bundle) -> None:
    bundle = make_bundle({"features.py": READER}, entries=ENTRIES, extra={"events": {"reads": ["clicks"]}})
    with Runtime({"keys": keys_dir, "isolation": "thread"}) as rt:
        rt.load(bundle)
        with pytest.raises(NotFound, match="no event store"):
            rt.infer("s", "q", {"table": "clicks"})
        assert rt.track(click(1)) == []  # without a store, events only fire triggers (as before)
    own = make_bundle({"features.py": READER}, entries=ENTRIES, extra={"events": EVENTS})
    with Runtime({"keys": keys_dir, "isolation": "thread"}) as rt, pytest.raises(BadInput, match="no event store"):
        rt.load(own)


def test_unreadable_table_is_a_policy_error(keys_dir: Path, tmp_path: Path, make_bundle) -> None:
    bundle = make_bundle({"features.py": READER}, entries=ENTRIES, extra={"events": {"reads": ["plain"]}})
    with Runtime(config(keys_dir, tmp_path / "data")) as rt:
        rt.load(bundle)
        with pytest.raises(PolicyError, match="may not read table 'clicks'"):
            rt.infer("s", "q", {"table": "clicks"})


def frames(rt: Runtime) -> int:
    """``edge.events`` frames the bundle's workers sent to the host so far (process mode)."""
    return sum(p["events_frames"] for p in rt.metrics()["isolation"]["pools"].values())


DECLARED = {"table": "clicks", "window_ms": 600_000, "fields": ["item_id", "query_text"],
            "where": {"type": "click"}, "limit": 500}


def test_declared_rows_are_sent_with_the_request(keys_dir: Path, tmp_path: Path, make_bundle) -> None:
    """In process mode an entry's declared read (``events.prefetch``) is run by the host before
    dispatch: a query inside it is answered in the worker (no frame), with the rows thread mode
    returns; anything beyond it (an older window, another field or filter) goes to the host."""
    src = """
    import edge

    def entry(inputs):
        now = edge.now_ms()
        return [edge.events.query("clicks", since_ms=now - back, **args) for back, args in inputs["queries"]]
    """
    extra = {"events": {"reads": ["clicks"], "prefetch": {"q": [DECLARED]}}}
    bundle = make_bundle({"features.py": src}, entries={"q": "features:entry"}, extra=extra)
    now = time.time_ns() // 1_000_000
    events = [click(i, ts=now - 995_000 + i * 10_000) for i in range(100)]  # every 10 s, the last 5 s ago
    inside = [[300_000, {"where": {"type": "click"}, "fields": ["item_id"]}],
              [500_000, {"where": {"type": ["click"]}, "fields": ["query_text", "item_id"], "limit": 3}],
              [200_000, {"where": {"type": "click"}, "fields": ["ts", "item_id"], "until_ms": now - 50_000}]]
    beyond = [[900_000, {"where": {"type": "click"}, "fields": ["item_id"]}],         # older than the window
              [300_000, {"where": {"type": "click"}, "fields": ["price"]}],           # a field not declared
              [300_000, {"where": {"type": "page_view"}, "fields": ["item_id"]}],     # another filter
              [300_000, {"where": {"type": "click"}, "fields": ["item_id"], "limit": 0}]]  # bad: the host's error
    results = {}
    for mode in ("thread", "process"):
        with Runtime(config(keys_dir, tmp_path / f"data-{mode}", mode)) as rt:
            rt.load(bundle)
            for e in events:
                rt.track(e)
            results[mode] = rt.infer("s", "q", {"queries": inside})
            if mode == "process":
                assert frames(rt) == 0  # every query was answered from the rows sent with the request
                assert rt.infer("s", "q", {"queries": beyond[:3]}) == rt.infer("s", "q", {"queries": beyond[:3]})
                assert frames(rt) == 6
                with pytest.raises(BadInput, match="'limit' must be in"):
                    rt.infer("s", "q", {"queries": beyond[3:]})
    assert results["process"] == results["thread"]
    clicks = [i for i in range(100) if i % 3]
    assert results["thread"][0]["item_id"] == [i for i in clicks if i >= 70]
    assert results["thread"][1] == {"query_text": [f"secret query {i}" for i in (95, 97, 98)], "item_id": [95, 97, 98]}


def test_declared_reads_stay_within_what_the_bundle_may_read(keys_dir: Path, tmp_path: Path, make_bundle) -> None:
    """A declared read names a table the bundle reads or owns (else the pack refuses it), fields
    and filters of that table (else the load refuses it); a window the limit cut is not answered
    from the rows sent (a narrower window could miss rows), but by the host."""
    entries = {"q": "features:entry"}
    with pytest.raises(BadInput, match="neither read"):
        make_bundle({"features.py": READER}, entries=entries,
                    extra={"events": {"reads": ["plain"], "prefetch": {"q": [DECLARED]}}})
    with pytest.raises(BadInput, match="names no entry"):
        make_bundle({"features.py": READER}, entries=entries,
                    extra={"events": {"reads": ["clicks"], "prefetch": {"other": [DECLARED]}}})
    bad_field = make_bundle({"features.py": READER}, entries=entries, name="badfield", extra={
        "events": {"reads": ["clicks"], "prefetch": {"q": [{**DECLARED, "fields": ["secret"]}]}}})
    cut = make_bundle({"features.py": READER}, entries=entries, name="cut", extra={
        "events": {"reads": ["clicks"], "prefetch": {"q": [{**DECLARED, "limit": 5}]}}})
    with Runtime(config(keys_dir, tmp_path / "data", "process")) as rt:
        with pytest.raises(BadInput, match="'events.prefetch' of clicks: query of clicks: no field"):
            rt.load(bad_field)
        rt.load(cut)
        now = time.time_ns() // 1_000_000
        for i in range(30):
            rt.track(click(i, ts=now - 30_000 + i * 1000))
        got = rt.infer("s", "q", {"table": "clicks", "args": {"since_ms": now - 40_000, "where": {"type": "click"},
                                                             "fields": ["item_id"]}})
        assert got["item_id"] == [i for i in range(30) if i % 3]  # all of them: from the host, not the 5 sent
        assert frames(rt) == 1
