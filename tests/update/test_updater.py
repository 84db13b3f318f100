"""The device's updater end to end: publish, check, download, verify, activate, hot swap; staged
rollout and device classes; automatic rollback of a bad version that is then never retried; the
persisted downgrade floor; the fallback bundles served before any update."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from update_fixtures import channel, device, events, features, http_channel  # noqa: F401 - fixtures

from vm.errors import BadInput, ScriptError
from vm.host.runtime import Runtime
from vm.tools import publish
from vm.update.state import State
from vm.update.updater import bucket


def test_publish_then_update_now_hot_swaps_to_the_new_version(make_bundle, channel, device) -> None:
    v1 = make_bundle(features("1.0.0"), name="feat", version="1.0.0")
    v2 = make_bundle(features("2.0.0", factor=3), name="feat", version="2.0.0")
    channel.publish(v1)
    rt = device()
    report = rt.update_now()
    assert events(report) == ["checked", "downloaded", "activated"], report
    assert rt.infer("s", "b", {"x": 2}) == {"version": "1.0.0", "x": 4}
    channel.publish(v2)
    assert events(rt.update_now()) == ["checked", "downloaded", "activated"]
    assert rt.infer("s", "b", {"x": 2}) == {"version": "2.0.0", "x": 6}
    assert events(rt.update_now()) == ["checked"]  # nothing new: nothing downloaded


def test_over_http_and_the_update_survives_a_restart_without_network(
        make_bundle, channel, http_channel, device, tmp_path: Path) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    rt = device(http_channel.url)
    assert events(rt.update_now())[-1] == "activated"
    rt.close()
    offline = device("http://127.0.0.1:9/", timeout_s=0.5)  # same state dir, nothing listens there
    assert offline.infer("s", "b", {"x": 1})["version"] == "1.0.0"
    report = offline.update_now()
    assert report[-1]["event"] == "refused" and report[-1]["error"] == "not_found", report
    assert offline.infer("s", "b", {"x": 1})["version"] == "1.0.0"


def test_the_fallback_bundles_serve_before_any_update(make_bundle, channel, device, tmp_path: Path) -> None:
    fallback = tmp_path / "shipped"
    fallback.mkdir()
    shutil.copy(make_bundle(features("1.0.0"), name="feat", version="1.0.0"), fallback / "feat.evb")
    shutil.copy(channel.root, fallback / "root.json")
    rt = device(str(tmp_path / "nowhere"), fallback_dir=str(fallback), root=None)
    assert rt.infer("s", "b", {})["version"] == "1.0.0"
    assert rt.update_now()[-1]["event"] == "refused"
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    rt.close()
    rt = device(str(channel.dir), fallback_dir=str(fallback), root=None)
    assert events(rt.update_now())[-1] == "activated"
    assert rt.infer("s", "b", {})["version"] == "2.0.0"


def test_rollout_bucket_is_stable_and_within_two_points_over_10000_devices() -> None:
    ids = [f"device-{i}" for i in range(10_000)]
    assert [bucket(i, "feat") for i in ids[:100]] == [bucket(i, "feat") for i in ids[:100]]
    for percent in (1, 10, 25, 50, 90):
        share = sum(bucket(i, "feat") < percent * 100 for i in ids) / len(ids) * 100
        assert abs(share - percent) <= 2, (percent, share)
    # independent between bundles: the devices early for one are not the same for another
    early_a = {i for i in ids if bucket(i, "a") < 1000}
    early_b = {i for i in ids if bucket(i, "b") < 1000}
    assert len(early_a & early_b) < len(early_a) / 2


def test_staged_rollout_and_device_classes_pick_the_target_for_this_device(make_bundle, channel, device) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"), rollout=30)
    channel.publish(make_bundle(features("3.0.0"), name="feat", version="3.0.0"), device_classes=["low-end"])
    inside = next(f"d{i}" for i in range(1000) if bucket(f"d{i}", "feat") < 3000)
    outside = next(f"d{i}" for i in range(1000) if bucket(f"d{i}", "feat") >= 3000)
    got = {}
    for name, device_id, cls in (("in", inside, None), ("out", outside, None), ("low", outside, "low-end")):
        rt = device(state=name, device_id=device_id, **({"device_class": cls} if cls else {}))
        rt.update_now()
        got[name] = rt.infer("s", "b", {})["version"]
    assert got == {"in": "2.0.0", "out": "1.0.0", "low": "3.0.0"}


def test_a_bad_new_version_is_rolled_back_and_never_retried(make_bundle, channel, device, tmp_path) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    rt = device(probation_calls=4, probation_failures=1)
    seen: list[dict] = []
    settled = threading.Event()
    rt.set_update_listener(lambda e: (seen.append(e), e["event"] in ("confirmed", "rolled_back") and settled.set()))
    rt.update_now()
    for _ in range(4):
        rt.infer("s", "b", {})
    assert settled.wait(30), seen
    assert seen[-1]["event"] == "confirmed" and seen[-1]["version"] == "1.0.0"
    settled.clear()
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    rt.update_now()
    assert rt.infer("s", "b", {})["version"] == "2.0.0"
    for _ in range(2):  # script errors: more than probation_failures of its first calls
        with pytest.raises(ScriptError):
            rt.infer("s", "b", {"boom": True})
    assert settled.wait(30), seen
    assert seen[-1]["event"] == "rolled_back" and seen[-1]["version"] == "2.0.0" and seen[-1]["to"] == "1.0.0"
    assert "script" in seen[-1]["reason"]
    assert rt.infer("s", "b", {})["version"] == "1.0.0"
    assert events(rt.update_now()) == ["checked"]  # 2.0.0 is known bad: never again
    state = State.load(tmp_path / "state")
    assert state.bundles["feat"].bad == ["2.0.0"] and state.bundles["feat"].active == "1.0.0"
    rt.close()
    rt = device()  # and not after a restart either
    assert rt.infer("s", "b", {})["version"] == "1.0.0"
    assert events(rt.update_now()) == ["checked"]
    channel.publish(make_bundle(features("3.0.0"), name="feat", version="3.0.0"))
    assert events(rt.update_now())[-1] == "activated"
    assert rt.infer("s", "b", {})["version"] == "3.0.0"


def test_bad_input_does_not_count_against_a_new_version(make_bundle, channel, device) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    rt = device(probation_calls=3, probation_failures=0)
    seen: list[dict] = []
    settled = threading.Event()
    rt.set_update_listener(lambda e: (seen.append(e), e["event"] in ("confirmed", "rolled_back") and settled.set()))
    rt.update_now()
    for _ in range(3):
        with pytest.raises(BadInput):
            rt.infer_msgpack("s", "b", b"\xc1")  # not msgpack: the caller's fault
    for _ in range(3):
        rt.infer("s", "b", {})
    assert settled.wait(30), seen
    assert seen[-1]["event"] == "confirmed", seen


def test_a_version_whose_module_fails_to_load_is_refused_and_marked_bad(make_bundle, channel, device) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    rt = device()
    rt.update_now()
    channel.publish(make_bundle({"features.py": "raise ValueError('broken at load')\ndef entry(i):\n    return 1\n"},
                                name="feat", version="2.0.0"))
    report = rt.update_now()
    assert events(report) == ["checked", "downloaded", "refused"], report
    assert rt.infer("s", "b", {})["version"] == "1.0.0"
    assert events(rt.update_now()) == ["checked"]


def test_the_downgrade_floor_is_persisted(make_bundle, channel, device, tmp_path) -> None:
    """A channel that goes back to an older version (a compromised targets key, a publisher error)
    never moves a device below what it once activated, across restarts too."""
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    rt = device()
    rt.update_now()
    rt.close()
    ch = publish.Channel(channel.dir)
    del ch.targets.signed.targets["feat/2.0.0.evb"]  # validly signed by the targets key
    ch.commit(channel.keys)
    State.bundle_file(tmp_path / "state", "feat", "2.0.0").unlink()  # and the device lost the file
    rt = device()
    assert rt.bundles() == []  # nothing to serve: the state's version is gone, no fallback
    report = rt.update_now()
    assert report[-1]["event"] == "refused" and report[-1]["error"] == "downgrade", report
    assert rt.bundles() == []


def test_the_background_poller_installs_updates(make_bundle, channel, device) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    activated = threading.Event()
    rt = device(interval_s=0.2)
    rt.set_update_listener(lambda e: e["event"] == "activated" and activated.set())
    assert activated.wait(60)
    assert rt.infer("s", "b", {})["version"] == "1.0.0"


def test_old_versions_are_pruned(make_bundle, channel, device, tmp_path) -> None:
    rt = device(probation_calls=1)
    done = threading.Event()
    rt.set_update_listener(lambda e: e["event"] == "confirmed" and done.set())
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        channel.publish(make_bundle(features(v), name="feat", version=v))
        rt.update_now()
        rt.infer("s", "b", {})
        assert done.wait(30)
        done.clear()
    assert sorted(p.name for p in (tmp_path / "state" / "bundles" / "feat").iterdir()) == ["3.0.0.evb"]


def test_bad_update_config_is_refused_by_name(keys_dir, tmp_path) -> None:
    for update, message in (({"state_dir": "x"}, "update.channel"), ({"channel": "c", "state_dir": "s"}, "root"),
                            ({"channel": "c", "state_dir": "s", "root": "r", "interval": 1}, "unknown"),
                            ({"channel": "c", "state_dir": "s", "root": "r", "probation_calls": 0}, "probation_calls"),
                            ("c", "must be an object")):
        with pytest.raises(BadInput, match=message):
            Runtime({"keys": keys_dir, "isolation": "thread", "update": update})
    with pytest.raises(BadInput, match="no update channel"):
        Runtime({"keys": keys_dir, "isolation": "thread"}).update_now()
