"""``edgevm replay``: the same 1,000 logged ranking requests through the real C host program (the
device's path: libedgevm, process isolation) and through replay's local and Ray engines give
byte-identical msgpack results for every row; failing rows are typed errors that never stop the
job; a bundle the replay key cannot open fails before any worker starts."""
from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
import hostbuild  # noqa: E402

from examples.ranking import build_bundle as ranking_build  # noqa: E402
from examples.ranking import train  # noqa: E402
from vm.bundle import keys as keys_mod  # noqa: E402
from vm.errors import BadInput, DecryptError, NotFound, ScriptError  # noqa: E402
from vm.host.cli import main as cli_main  # noqa: E402
from vm.tools.packer import pack  # noqa: E402
from vm.tools.replay import replay  # noqa: E402

N_REQUESTS = 1000
SYSTEM, BUSINESS = "home", "rerank"


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> dict:
    """The ranking bundle sealed to the fleet and a replay key, and 1,000 requests as Parquet, JSON
    Lines and the length-prefixed msgpack stream the C host reads."""
    out = tmp_path_factory.mktemp("replay")
    ranking_build.main(out, keys_dir, targets=["3.11"])
    replay_keys = out / "replay-keys"
    keys_mod.generate_recipient(replay_keys, keys_dir)
    bundle = out / "both.evb"
    pack(out / "ranking-src", keys_dir, bundle, targets=["3.11"], recipients=[replay_keys])
    slates = train.build_dataset(0)["slates"][:N_REQUESTS]
    requests = [ranking_build.to_request(s["slate"], k=10) for s in slates]
    assert len(requests) == N_REQUESTS
    payloads = [msgpack.packb(r, use_bin_type=True) for r in requests]
    pq.write_table(pa.Table.from_pylist([{"request_id": i, **r} for i, r in enumerate(requests)]),
                   out / "requests.parquet")
    (out / "requests.jsonl").write_text("".join(json.dumps({"request_id": i, **r}) + "\n"
                                                for i, r in enumerate(requests)))
    (out / "requests.bin").write_bytes(b"".join(struct.pack(">I", len(p)) + p for p in payloads))
    return {"dir": out, "bundle": bundle, "replay_keys": replay_keys, "payloads": payloads}


@pytest.fixture(scope="module")
def device_results(logged: dict, keys_dir: Path) -> list[bytes]:
    """What the C host (libedgevm, the device's default process isolation, the fleet's key) returns."""
    host = hostbuild.build_host(logged["dir"] / "host")
    results = logged["dir"] / "results.bin"
    proc = subprocess.run([str(host), "--keys", str(keys_dir), "--bundle", str(logged["bundle"]),
                           "--replay", str(logged["dir"] / "requests.bin"), "--replay-out", str(results),
                           "--system", SYSTEM, "--business", BUSINESS], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data, out, at = results.read_bytes(), [], 0
    while at < len(data):
        code, n = struct.unpack_from(">II", data, at)
        body = data[at + 8:at + 8 + n]
        assert code == 0, body
        out.append(body)
        at += 8 + n
    assert len(out) == N_REQUESTS
    return out


def _results(out: Path) -> dict[int, bytes]:
    table = pq.read_table(out).to_pylist()
    assert all(r["error_code"] is None for r in table), [r for r in table if r["error_code"] is not None][:3]
    return {int(r["key"]): r["result"] for r in table}


def _assert_identical(got: dict[int, bytes], want: list[bytes]) -> None:
    assert sorted(got) == list(range(N_REQUESTS))
    differ = [k for k in got if got[k] != want[k]]
    assert not differ, f"{len(differ)} rows differ from the C host's, first {differ[:5]}"


def test_local_replay_is_byte_identical_to_the_c_host(logged: dict, device_results: list[bytes],
                                                      tmp_path: Path) -> None:
    done = replay(logged["bundle"], logged["replay_keys"], logged["dir"] / "requests.parquet", system=SYSTEM,
                  business=BUSINESS, out=tmp_path / "out", workers=2, progress=None)
    assert (done.rows, done.errors, done.engine) == (N_REQUESTS, 0, "local")
    table = pq.read_table(tmp_path / "out")
    assert table.schema.names == ["key", "result", "error_code", "error_name", "error", "result_items",
                                  "result_scores"]
    assert table.schema.field("result_items").type == pa.list_(pa.int64())
    first = msgpack.unpackb(table.column("result")[0].as_py())
    assert table.column("result_items")[0].as_py() == first["items"] and len(first["items"]) == 10
    assert table.column("key").to_pylist() == list(range(N_REQUESTS))  # the local engine keeps input order
    _assert_identical(_results(tmp_path / "out"), device_results)


@pytest.fixture(scope="module")
def ray_cluster():
    """One small local Ray cluster for this module, shut down after it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()
    assert not ray.is_initialized()


@pytest.mark.parametrize("source", ["requests.parquet", "requests.jsonl"])
def test_ray_replay_is_byte_identical_to_the_c_host(ray_cluster, logged: dict, device_results: list[bytes],
                                                    tmp_path: Path, source: str) -> None:
    done = replay(logged["bundle"], logged["replay_keys"], logged["dir"] / source, system=SYSTEM,
                  business=BUSINESS, out=tmp_path / "out", engine="ray", workers=2, batch_rows=200,
                  progress=None)
    assert (done.rows, done.errors, done.engine) == (N_REQUESTS, 0, "ray")
    _assert_identical(_results(tmp_path / "out"), device_results)


def test_failing_rows_are_typed_errors_and_the_job_goes_on(make_bundle, keys_dir: Path, tmp_path: Path) -> None:
    bundle = make_bundle({"features.py": "def entry(inputs):\n    return 100 // inputs['x']\n"})
    lines = ['{"request_id": "a", "x": 5}', "not json", "[1, 2]", '{"x": 1}', '{"request_id": 7, "x": 0}',
             '{"request_id": "big", "x": "text"}', '{"request_id": "b", "x": 50}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    done = replay(bundle, keys_dir, tmp_path / "in.jsonl", system="s", business="b", out=tmp_path / "out",
                  workers=1, config={"isolation": "thread"}, progress=None)
    assert (done.rows, done.errors) == (7, 5)
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert [r["key"] for r in rows] == ["a", None, None, None, "7", "big", "b"]
    assert [msgpack.unpackb(r["result"]) if r["result"] else None for r in rows] == [20, None, None, None, None,
                                                                                      None, 2]
    names = [r["error_name"] for r in rows]
    assert names == [None, BadInput.name, BadInput.name, BadInput.name, ScriptError.name, ScriptError.name, None]
    assert [r["error_code"] for r in rows][1:4] == [BadInput.code] * 3
    assert "ZeroDivisionError" in rows[4]["error"] and "features.py" in rows[4]["error"]


def test_a_bundle_the_replay_key_cannot_open_fails_before_any_worker(make_bundle, keys_dir: Path,
                                                                     tmp_path: Path) -> None:
    bundle = make_bundle({"features.py": "def entry(inputs):\n    return 1\n"})
    replay_keys = tmp_path / "replay-keys"
    keys_mod.generate_recipient(replay_keys, keys_dir)
    (tmp_path / "in.jsonl").write_text('{"request_id": 1}\n')
    with pytest.raises(DecryptError):
        replay(bundle, replay_keys, tmp_path / "in.jsonl", system="s", business="b", out=tmp_path / "out",
               progress=None)
    with pytest.raises(NotFound, match="no entry s/nope"):
        replay(bundle, keys_dir, tmp_path / "in.jsonl", system="s", business="nope", out=tmp_path / "out",
               progress=None)
    (tmp_path / "in.csv").write_text("request_id\n1\n")
    with pytest.raises(BadInput, match="Parquet"):
        replay(bundle, keys_dir, tmp_path / "in.csv", system="s", business="b", out=tmp_path / "out",
               progress=None)
    assert not (tmp_path / "out").exists()


def test_the_cli_replays_parquet_and_reports_on_stderr(make_bundle, keys_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    bundle = make_bundle({"features.py": "def entry(inputs):\n    return {'y': inputs['x'] + 1}\n"})
    pq.write_table(pa.table({"id": [10, 11, 12], "x": [1, 2, 3]}), tmp_path / "in.parquet")
    status = cli_main(["replay", str(bundle), "--keys", str(keys_dir), "--input", str(tmp_path / "in.parquet"),
                       "--system", "s", "--business", "b", "--out", str(tmp_path / "out"), "--workers", "1",
                       "--key-column", "id", "--isolation", "thread"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert json.loads(captured.out)["rows"] == 3 and "replay: done, 3 rows (0 failed)" in captured.err
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert [(r["key"], msgpack.unpackb(r["result"])) for r in rows] == [(10, {"y": 2}), (11, {"y": 3}), (12, {"y": 4})]
    status = cli_main(["replay", str(bundle), "--keys", str(keys_dir), "--input", str(tmp_path / "in.parquet"),
                       "--system", "s", "--business", "b", "--out", str(tmp_path / "out")])
    assert status == 10 + BadInput.code and "already exists" in capsys.readouterr().err


# ---- result columns -----------------------------------------------------------------------------

COLUMNS_SCRIPT = """
def entry(inputs):
    x = inputs['x']
    if x == 0:
        return 7
    if x == 1:
        return {'n': 1, 'scores': [0.5, 1.5], 'tag': 'a', 'mixed': 'text'}
    if x == 2:
        return {'n': 2.5, 'scores': [], 'mixed': 3}
    if x == 3:
        return {'n': 3, 'scores': [2], 'tag': None, 'deep': {'a': [1, {'b': 2}]}}
    return 1 // (x - x)
"""


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_results_split_into_typed_columns_whatever_the_batches(request: pytest.FixtureRequest, make_bundle,
                                                               keys_dir: Path, tmp_path: Path, engine: str) -> None:
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    bundle = make_bundle({"features.py": COLUMNS_SCRIPT})
    xs = [0, 1, 2, 3, 4, 1, 0, 3]
    pq.write_table(pa.table({"request_id": list(range(len(xs))), "x": xs}), tmp_path / "in.parquet")
    done = replay(bundle, keys_dir, tmp_path / "in.parquet", system="s", business="b", out=tmp_path / "out",
                  engine=engine, workers=2 if engine == "ray" else 1, batch_rows=2,
                  config={"isolation": "thread"}, progress=None)
    assert (done.rows, done.errors) == (8, 1)
    files = sorted((tmp_path / "out").glob("*.parquet"))
    assert len({pq.read_schema(f) for f in files}) == 1, "every file of the job has one schema"
    table = pq.read_table(tmp_path / "out").sort_by("key")
    schema = table.schema
    assert schema.names == ["key", "result", "error_code", "error_name", "error", "result_deep", "result_mixed",
                            "result_n", "result_scores", "result_tag", "result_value"]
    assert schema.field("result_n").type == pa.float64()          # ints and floats: double
    assert schema.field("result_scores").type == pa.list_(pa.float64())
    assert schema.field("result_tag").type == pa.string()
    assert schema.field("result_value").type == pa.int64()
    for name in ("result_mixed", "result_deep"):                   # no one type: each value's msgpack
        assert schema.field(name).type == pa.binary() and schema.field(name).metadata == {b"edgevm": b"msgpack"}
    rows = table.to_pylist()
    assert [r["result_value"] for r in rows] == [7, None, None, None, None, None, 7, None]
    assert [r["result_n"] for r in rows] == [None, 1.0, 2.5, 3.0, None, 1.0, None, 3.0]
    assert [r["result_scores"] for r in rows] == [None, [0.5, 1.5], [], [2.0], None, [0.5, 1.5], None, [2.0]]
    assert [r["result_tag"] for r in rows] == [None, "a", None, None, None, "a", None, None]
    assert [None if r["result_mixed"] is None else msgpack.unpackb(r["result_mixed"]) for r in rows] == \
        [None, "text", 3, None, None, "text", None, None]
    assert msgpack.unpackb(rows[3]["result_deep"]) == {"a": [1, {"b": 2}]}
    assert rows[4]["error_name"] == ScriptError.name and rows[4]["result"] is None
    for r in rows:  # the columns are the msgpack result, split
        if r["result"] is not None:
            result = msgpack.unpackb(r["result"])
            if isinstance(result, dict):
                assert r["result_scores"] == result["scores"]
            else:
                assert r["result_value"] == result


# ---- requests rebuilt from event tables ----------------------------------------------------------

EVENTS_SCRIPT = """
import edge

def entry(inputs):
    now = inputs['now']
    hour = edge.events.query('clicks', since_ms=now - 3_600_000, until_ms=now + 1, where={'type': 'click'},
                             fields=['ts', 'item', 'price'])
    recent = edge.events.query('clicks', until_ms=now + 1, fields=['ts', 'item'], limit=20)
    views = edge.events.query('views', fields=['ts', 'page'])
    seen = edge.events.query('seen', fields=['n'])
    edge.events.append('seen', {'ts': now, 'n': int(hour['ts'].size)})
    return {'clicks_1h': int(hour['ts'].size), 'spend_1h': float(hour['price'].sum()), 'recent': recent['item'],
            'recent_ts': recent['ts'], 'views': views['page'], 'seen': seen['n'], 'k': inputs['k']}
"""
EVENT_TABLES = {"clicks": {"fields": {"type": "str", "item": "int", "price": "float"}, "sensitive": True,
                           "indexes": ["type"], "max_rows": 30},
                "views": {"fields": {"page": "str"}, "max_age_ms": 2 * 3_600_000}}
HOUR = 3_600_000


def _wall_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def device_log(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> dict:
    """Four users' devices (a fresh runtime each, the default process isolation, the event store in its
    own directory): each tracks a history (clicks over five hours, more than the table keeps; views
    three hours and one hour old), then serves three requests at the wall-clock time, tracking clicks
    between them. Logged: the requests (key, user, time, inputs), every tracked event, each result."""
    from conftest import BundleMaker

    from vm import Runtime

    out = tmp_path_factory.mktemp("replay-events")
    replay_keys = out / "replay-keys"
    keys_mod.generate_recipient(replay_keys, keys_dir)
    BundleMaker(out, keys_dir)({"features.py": EVENTS_SCRIPT}, extra={
        "events": {"reads": ["clicks", "views"], "tables": {"seen": {"fields": {"n": "int"}}}}})
    sealed = out / "both.evb"
    pack(out / "src1", keys_dir, sealed, targets=["3.11"], recipients=[replay_keys])
    requests, events, results = [], {"clicks": [], "views": []}, {}
    for u in range(4):
        user = f"user-{u}"
        with Runtime({"keys": str(keys_dir), "deadline_ms": 10_000,
                      "data": {"dir": str(out / f"device-{u}"), "tables": EVENT_TABLES}}) as rt:
            rt.load(sealed)

            def track(table: str, event: dict, rt: Runtime = rt, user: str = user) -> None:
                rt.track({"table": table, **event})
                events[table].append({"user_id": user, **event})

            base = _wall_ms()
            for i in range(40 + 5 * u):
                track("clicks", {"ts": base - 5 * HOUR + i * 6 * 60_000 + u, "type": ("click", "view")[i % 3 == 0],
                                 "item": 100 * u + i, "price": 1.25 * i})
            for age in (3 * HOUR, HOUR):
                track("views", {"ts": base - age, "page": f"p{u}-{age // HOUR}"})
            for k in range(3):
                now = _wall_ms()
                key = f"{user}/{k}"
                results[key] = rt.infer_msgpack("s", "b", msgpack.packb({"now": now, "k": k}, use_bin_type=True))
                requests.append({"request_id": key, "user_id": user, "now": now, "k": k})
                for j in range(4):  # after the request: in the export, but not what this request saw
                    track("clicks", {"ts": max(_wall_ms(), now + 1), "type": "click", "item": 9000 + 10 * k + j,
                                     "price": 2.0})
    pq.write_table(pa.Table.from_pylist(requests), out / "requests.parquet")
    pq.write_table(pa.Table.from_pylist(events["clicks"]), out / "clicks.parquet")
    (out / "views.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events["views"]))
    return {"dir": out, "bundle": sealed, "replay_keys": replay_keys, "results": results}


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_requests_rebuilt_from_event_tables_are_byte_identical_to_the_device(
        request: pytest.FixtureRequest, device_log: dict, tmp_path: Path, engine: str) -> None:
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    d = device_log["dir"]
    done = replay(device_log["bundle"], device_log["replay_keys"], d / "requests.parquet", system="s", business="b",
                  out=tmp_path / "out", engine=engine, workers=2, batch_rows=5,
                  events={"clicks": d / "clicks.parquet", "views": d / "views.jsonl"},
                  config={"data": {"tables": EVENT_TABLES}}, progress=None)
    assert (done.rows, done.errors) == (12, 0)
    got = {r["key"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    want = device_log["results"]
    assert sorted(got) == sorted(want)
    differ = [k for k in want if got[k]["result"] != want[k]]
    assert not differ, f"{len(differ)} of {len(want)} rows differ from the device's, first {differ[:3]}"
    # What the device saw, and so replay rebuilt: per user, its own events only, up to each request;
    # retention by rows (30 kept, limit 20 read) and by age (the 3-hour-old view gone); the bundle's
    # own table grown by that user's earlier requests only.
    first, third = got["user-2/0"], got["user-2/2"]
    assert third["result_seen"] == [first["result_clicks_1h"], got["user-2/1"]["result_clicks_1h"]]
    assert first["result_seen"] == [] and first["result_views"] == ["p2-1"]
    assert all(200 <= i < 300 for i in first["result_recent"]) and len(first["result_recent"]) == 20
    assert third["result_recent"][-8:] == [9000, 9001, 9002, 9003, 9010, 9011, 9012, 9013]


def test_event_replay_refuses_undeclared_tables_and_fails_a_user_whose_events_the_store_refuses(
        make_bundle, keys_dir: Path, tmp_path: Path) -> None:
    bundle = make_bundle({"features.py": "import edge\n\ndef entry(inputs):\n"
                                         "    return int(edge.events.query('views', fields=['ts'])['ts'].size)\n"},
                         extra={"events": {"reads": ["views"]}})
    pq.write_table(pa.table({"request_id": [1, 2, 3, 4], "user_id": ["a", "b", "a", "b"], "now": [10, 10, 20, 20]}),
                   tmp_path / "requests.parquet")
    (tmp_path / "views.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
        {"user_id": "a", "ts": 5, "page": "x"}, {"user_id": "b", "ts": 5, "page": "y"},
        {"user_id": "b", "ts": 15, "page": 7}, {"user_id": "a", "ts": 15, "page": "z"}]))
    tables = {"views": {"fields": {"page": "str"}}}
    common = dict(system="s", business="b", workers=1, progress=None)
    with pytest.raises(BadInput, match="not declared"):
        replay(bundle, keys_dir, tmp_path / "requests.parquet", out=tmp_path / "o1", events={"clicks": tmp_path / "views.jsonl"},
               config={"data": {"tables": tables}}, **common)
    with pytest.raises(BadInput, match="data.dir"):
        replay(bundle, keys_dir, tmp_path / "requests.parquet", out=tmp_path / "o2", events={"views": tmp_path / "views.jsonl"},
               config={"data": {"tables": tables, "dir": str(tmp_path)}}, **common)
    done = replay(bundle, keys_dir, tmp_path / "requests.parquet", out=tmp_path / "o3",
                  events={"views": tmp_path / "views.jsonl"},
                  config={"isolation": "thread", "data": {"tables": tables}}, **common)
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "o3").to_pylist()}
    assert (done.rows, done.errors) == (4, 1)
    assert [rows[k]["result_value"] for k in (1, 2, 3)] == [1, 1, 2]
    assert rows[4]["error_name"] == BadInput.name and "'page' must be str" in rows[4]["error"]


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_runtime_the_workers_cannot_start_is_the_job_s_typed_error(request: pytest.FixtureRequest, make_bundle,
                                                                     keys_dir: Path, tmp_path: Path,
                                                                     engine: str) -> None:
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    bundle = make_bundle({"features.py": "def entry(inputs):\n    return 1\n"})
    (tmp_path / "in.jsonl").write_text('{"request_id": 1}\n')
    with pytest.raises(BadInput, match="deadline_ms"):
        replay(bundle, keys_dir, tmp_path / "in.jsonl", system="s", business="b", out=tmp_path / "out",
               engine=engine, workers=1, config={"deadline_ms": -5}, progress=None)
