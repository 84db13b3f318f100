"""Feature snapshots on the device (docs/snapshots.md): loaded from a local path, read by scripts
through ``edge.features``, swapped atomically (no call sees two versions), never copied per call,
persisted with a version floor, and every refused snapshot leaves the old one serving; in thread
and process isolation."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import forge_snapshot

from vm.errors import BadInput, DecryptError, Downgrade, EdgeError, PolicyError, ScriptError, SignatureError
from vm.host.runtime import Runtime
from vm.tools import snapshot as builder

N = 50_000  # rows: a 600 KB snapshot

FEATURES = """
import edge

SEEN = []


def entry(inputs):
    op = inputs.get("op", "read")
    if op == "read":
        p = edge.features.get("pop")
        v = edge.features.version("pop")
        total = 0
        for i in range(inputs.get("spin", 0)):
            total += i
        p2 = edge.features.get("pop")
        return {"v": v, "v2": edge.features.version("pop"), "score0": float(p["score"][0]),
                "score_last": float(p2["score"][-1]), "item_last": int(p2["item"][-1]),
                "open": list(edge.features.get("stores")["open"]) if "stores" in edge.features.available() else None}
    if op == "same":
        a = edge.features.get("pop")["score"]
        SEEN.append(a)
        return {"same": SEEN[0] is a, "calls": len(SEEN)}
    if op == "get":
        return sorted(edge.features.get(inputs["name"]))
    return list(edge.features.available())
"""


def pop(tmp_path: Path, keys_dir: Path, version: int, *, encrypt: bool = False, tag: str = "",
        score: float | None = None) -> Path:
    """Snapshot ``pop`` version ``version``.0: every score is ``version``, items end at N + version."""
    out = tmp_path / f"pop-{version}{tag}.evs"
    builder.build("pop", f"{version}.0", keys_dir, out, encrypt=encrypt,
                  columns={"item": np.arange(N, dtype=np.int64) + version + 1,
                           "score": np.full(N, version if score is None else score, dtype=np.float32)})
    return out


def stores(tmp_path: Path, keys_dir: Path, version: str = "1") -> Path:
    out = tmp_path / f"stores-{version}.evs"
    builder.build("stores", version, keys_dir, out, table={"open": [3, 5, 8]}, encrypt=True)
    return out


@pytest.fixture(params=["thread", "process"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def runtime(tmp_path: Path, keys_dir: Path) -> Iterator[Any]:
    made: list[Runtime] = []

    def make(mode: str = "thread", **config: Any) -> Runtime:
        rt = Runtime({"keys": keys_dir, "isolation": mode, "deadline_ms": 10_000, **config})
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def reader(make_bundle) -> Path:
    return make_bundle({"features.py": FEATURES}, name="reader", extra={"snapshots": ["pop", "stores"]})


def check(result: dict[str, Any]) -> int:
    """The version a read call saw, after checking that it saw only that one."""
    major = int(result["v"].split(".")[0])
    assert result["v2"] == result["v"], result
    assert result["score0"] == result["score_last"] == major, result
    assert result["item_last"] == N + major, result
    return major


def test_a_script_reads_a_local_snapshot_and_sees_each_new_version(tmp_path: Path, keys_dir: Path, reader: Path,
                                                                 runtime, mode: str) -> None:
    rt = runtime(mode)
    info = rt.load_snapshot(pop(tmp_path, keys_dir, 1, encrypt=True))
    assert info["version"] == "1.0" and info["columns"]["score"] == {"dtype": "<f4", "shape": [N]}
    rt.load_snapshot(stores(tmp_path, keys_dir).read_bytes())
    rt.load(reader)
    result = rt.infer("s", "b", {})
    assert check(result) == 1 and result["open"] == [3, 5, 8]
    rt.load_snapshot(pop(tmp_path, keys_dir, 2))
    assert check(rt.infer("s", "b", {})) == 2
    assert [s["name"] for s in rt.snapshots()] == ["pop", "stores"]


def test_no_call_sees_a_mix_of_versions_while_snapshots_swap(tmp_path: Path, keys_dir: Path, reader: Path,
                                                            runtime, mode: str) -> None:
    rt = runtime(mode, workers=2)
    files = [pop(tmp_path, keys_dir, v) for v in range(1, 25)]
    rt.load_snapshot(files[0])
    rt.load(reader)
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(check(rt.infer("s", "b", {"spin": 100_000})))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for version, f in enumerate(files[1:], 2):
            rt.load_snapshot(f)
            for _ in range(4000):  # until a call started on the new version (or the reader failed)
                if errors or seen and max(seen) >= version:
                    break
                threading.Event().wait(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(set(seen)) >= 2 and max(seen) == 24, sorted(set(seen))


def test_the_arrays_are_the_same_objects_for_every_call_of_a_version(tmp_path: Path, keys_dir: Path,
                                                                      reader: Path, runtime, mode: str) -> None:
    rt = runtime(mode)
    rt.load_snapshot(pop(tmp_path, keys_dir, 1))
    rt.load(reader)
    assert [rt.infer("s", "b", {"op": "same"})["same"] for _ in range(5)] == [True] * 5  # never copied per call
    rt.load_snapshot(pop(tmp_path, keys_dir, 2))
    assert rt.infer("s", "b", {"op": "same"})["same"] is False  # the new version's own arrays


def test_a_bundle_reads_only_the_snapshots_it_declares(tmp_path: Path, keys_dir: Path, make_bundle, runtime,
                                                       mode: str) -> None:
    rt = runtime(mode)
    rt.load_snapshot(pop(tmp_path, keys_dir, 1))
    rt.load_snapshot(stores(tmp_path, keys_dir))
    rt.load(make_bundle({"features.py": FEATURES}, name="only-stores", extra={"snapshots": ["stores"]}))
    assert rt.infer("s", "b", {"op": "available"}) == ["stores"]
    assert rt.infer("s", "b", {"op": "get", "name": "stores"}) == ["open"]
    with pytest.raises(PolicyError, match="does not declare snapshot 'pop'"):
        rt.infer("s", "b", {"op": "get", "name": "pop"})
    rt.load(make_bundle({"features.py": FEATURES}, name="none", system="t"))
    with pytest.raises(PolicyError, match="declared: none"):
        rt.infer("t", "b", {"op": "get", "name": "stores"})


def test_a_declared_snapshot_not_delivered_yet_is_a_lookup_error(reader: Path, runtime) -> None:
    rt = runtime()
    rt.load(reader)
    assert rt.infer("s", "b", {"op": "available"}) == []
    with pytest.raises(ScriptError, match="LookupError: snapshot 'pop' has not reached this device"):
        rt.infer("s", "b", {})


def _hostile(keys_dir: Path) -> bytes:
    body = np.zeros(16, dtype=np.float32).tobytes()
    col = {"name": "score", "dtype": "|O", "shape": [16], "offset": 0, "length": 64}
    return forge_snapshot(keys_dir, {"name": "pop", "version": "9.0", "created": 1, "kind": "columns",
                                     "columns": [col]}, body)


def test_every_refused_snapshot_leaves_the_old_one_serving(tmp_path: Path, keys_dir: Path, other_keys_dir: Path,
                                                           reader: Path, runtime) -> None:
    rt = runtime(snapshot_dir=str(tmp_path / "snaps"))
    rt.load_snapshot(pop(tmp_path, keys_dir, 2))
    rt.load(reader)
    good = pop(tmp_path, keys_dir, 3).read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    huge = bytearray(_hostile(keys_dir))
    cases: list[tuple[Any, type[EdgeError]]] = [
        (bytes(flipped), SignatureError),
        (good[:-10], BadInput),
        (pop(tmp_path, other_keys_dir, 4, tag="-other-key"), SignatureError),
        (pop(tmp_path, keys_dir, 1), Downgrade),
        (pop(tmp_path, keys_dir, 2, tag="-other-contents", score=7), Downgrade),
        (bytes(huge), BadInput),
        (tmp_path / "missing.evs", EdgeError),
        (b"not a snapshot at all", BadInput),
        (forge_snapshot(keys_dir, {"name": "pop", "version": "9.1", "created": 1, "kind": "dict",
                                   "dict": {"offset": 0, "length": 1}}, b"\x01", encrypt=True,
                        seal_to=other_keys_dir), DecryptError),
    ]
    for data, error in cases:
        with pytest.raises(error):
            rt.load_snapshot(data)
        assert check(rt.infer("s", "b", {})) == 2
    assert [p.name for p in (tmp_path / "snaps" / "pop").iterdir()] == ["2.0.evs"]
    rt.load_snapshot(good)
    assert check(rt.infer("s", "b", {})) == 3


def test_the_active_version_and_its_floor_survive_a_restart(tmp_path: Path, keys_dir: Path, reader: Path,
                                                             runtime, mode: str) -> None:
    config = {"snapshot_dir": str(tmp_path / "snaps")}
    rt = runtime(mode, **config)
    rt.load_snapshot(pop(tmp_path, keys_dir, 1))
    rt.load_snapshot(pop(tmp_path, keys_dir, 3))
    rt.close()
    rt = runtime(mode, **config)
    rt.load(reader)
    assert check(rt.infer("s", "b", {})) == 3 and rt.snapshot_floor("pop") == "3.0"
    assert rt.load_snapshot(pop(tmp_path, keys_dir, 3))["version"] == "3.0"  # the same bytes again: no change
    with pytest.raises(Downgrade):
        rt.load_snapshot(pop(tmp_path, keys_dir, 2))


def test_a_damaged_stored_snapshot_is_not_served_and_its_floor_holds(tmp_path: Path, keys_dir: Path,
                                                                     reader: Path, runtime) -> None:
    config = {"snapshot_dir": str(tmp_path / "snaps")}
    rt = runtime(**config)
    rt.load_snapshot(pop(tmp_path, keys_dir, 2))
    rt.close()
    stored = tmp_path / "snaps" / "pop" / "2.0.evs"
    data = bytearray(stored.read_bytes())
    data[100] ^= 1
    stored.write_bytes(bytes(data))
    rt = runtime(**config)
    rt.load(reader)
    assert rt.snapshots() == []
    with pytest.raises(ScriptError, match="LookupError"):
        rt.infer("s", "b", {})
    with pytest.raises(Downgrade):
        rt.load_snapshot(pop(tmp_path, keys_dir, 2, tag="-rebuilt"))
    rt.load_snapshot(pop(tmp_path, keys_dir, 3))
    assert check(rt.infer("s", "b", {})) == 3


@pytest.mark.parametrize("value", ["pop", ["pop", "pop"], ["../x"], [1], {"pop": 1}])
def test_a_bad_snapshots_declaration_is_refused_at_pack(make_bundle, value: Any) -> None:
    with pytest.raises(BadInput, match="snapshots"):
        make_bundle({"features.py": FEATURES}, extra={"snapshots": value})
