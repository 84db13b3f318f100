"""The device side of an update beyond install and probation: A/B groups (published in the
target, picked stably per device, read by scripts through ``edge.ab_group()``, reported in the
metrics) and metrics kept per bundle version."""
from __future__ import annotations

import threading

import pytest
from update_fixtures import channel, device, events, features  # noqa: F401 - fixtures

from vm.bundle.channel import Offer
from vm.errors import BadInput, ScriptError
from vm.host import cli
from vm.host.runtime import Runtime
from vm.tools import publish
from vm.update.updater import ab_group, bucket

AB_FEATURES = """
import edge

def entry(inputs):
    if inputs.get("boom"):
        raise ValueError("boom")
    return {"version": VERSION, "group": edge.ab_group()}
"""


def _ab(version: str) -> dict[str, str]:
    return features(version, body=AB_FEATURES)


def test_ab_groups_are_stable_split_as_published_and_apart_from_the_rollout_bucket() -> None:
    offer = Offer(name="feat", version="1.0.0", ab=(("A", 2000), ("B", 3000), ("C", 5000)))
    ids = [f"device-{i}" for i in range(10_000)]
    groups = [ab_group(i, offer) for i in ids]
    assert groups[:100] == [ab_group(i, offer) for i in ids[:100]]
    for group, percent in (("A", 20), ("B", 30), ("C", 50)):
        assert abs(groups.count(group) / len(ids) * 100 - percent) <= 2, (group, groups.count(group))
    # the devices a 10 % rollout reaches are split like all devices, not all put in group A
    early = [g for i, g in zip(ids, groups, strict=True) if bucket(i, "feat") < 1000]
    assert abs(early.count("A") / len(early) * 100 - 20) <= 5, early.count("A") / len(early)
    assert ab_group("device-1", Offer(name="feat", version="1.0.0")) is None


def test_scripts_read_their_ab_group_and_it_survives_a_restart(make_bundle, channel, device) -> None:
    offer = Offer(name="feat", version="1.0.0", ab=(("control", 5000), ("treatment", 5000)))
    in_treatment = next(f"d{i}" for i in range(100) if ab_group(f"d{i}", offer) == "treatment")
    channel.publish(make_bundle(_ab("1.0.0"), name="feat", version="1.0.0"), ab={"control": 50, "treatment": 50})
    rt = device(device_id=in_treatment)
    assert events(rt.update_now())[-1] == "activated"
    assert rt.infer("s", "b", {}) == {"version": "1.0.0", "group": "treatment"}
    metrics = rt.metrics()
    assert metrics["bundles"]["feat"] == {"version": "1.0.0", "ab_group": "treatment"}
    assert metrics["versions"]["feat"]["1.0.0"]["ab_group"] == "treatment"
    rt.close()
    rt = device(device_id=in_treatment)  # restarted, offline-capable: the group comes from the state file
    assert rt.infer("s", "b", {}) == {"version": "1.0.0", "group": "treatment"}
    channel.publish(make_bundle(_ab("2.0.0"), name="feat", version="2.0.0"))  # no A/B test any more
    rt.update_now()
    assert rt.infer("s", "b", {}) == {"version": "2.0.0", "group": None}


def test_ab_shares_that_do_not_add_up_are_refused_by_publish_and_the_cli(make_bundle, channel) -> None:
    bundle = make_bundle(_ab("1.0.0"), name="feat", version="1.0.0")
    for ab, message in (({"A": 50, "B": 40}, "add up to 100"), ({"A": 100, "": 0}, "group names"),
                        ({"A": 33.33, "B": 33.33, "C": 33.33}, "add up to 100")):
        with pytest.raises(BadInput, match=message):
            channel.publish(bundle, ab=ab)
    parser = cli.build_parser()
    args = parser.parse_args(["publish", str(bundle), "--channel", str(channel.dir), "--keys", str(channel.keys),
                              "--ab", "A=25", "--ab", "B=75"])
    assert args.func(args) == 0
    assert publish.status(channel.dir)["bundles"][0]["ab"] == {"A": 2500, "B": 7500}
    with pytest.raises(SystemExit):
        parser.parse_args(["publish", str(bundle), "--channel", "c", "--keys", "k", "--ab", "A"])


def test_metrics_are_kept_per_bundle_version(make_bundle, channel, device) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    rt = device(probation_calls=5, probation_failures=1)
    rt.update_now()
    rt.infer("s", "b", {})
    rt.infer("s", "b", {})
    with pytest.raises(ScriptError):
        rt.infer("s", "b", {"boom": True})
    with pytest.raises(BadInput):
        rt.infer_msgpack("s", "b", b"\xc1")  # the caller's fault: failed, but not the version's fault
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    verdicts: list[dict] = []
    settled = threading.Event()
    rt.set_update_listener(lambda e: e["event"] in ("confirmed", "rolled_back") and (verdicts.append(e), settled.set()))
    assert events(rt.update_now())[-1] == "activated"
    for _ in range(3):
        assert rt.infer("s", "b", {})["version"] == "2.0.0"
    with pytest.raises(ScriptError):
        rt.infer("s", "b", {"boom": True})
    m = rt.metrics()
    old, new = (m["versions"]["feat"][v]["totals"] for v in ("1.0.0", "2.0.0"))
    assert (old["done"], old["failed"], old["faults"]) == (2, 2, 1), old
    assert (new["done"], new["failed"], new["faults"]) == (3, 1, 1), new
    assert m["versions"]["feat"]["2.0.0"]["tasks"]["infer"]["s/b"]["run_ms"]["count"] == 4
    merged = m["tasks"]["infer"]["s/b"]
    assert (merged["done"], merged["failed"], merged["run_ms"]["count"]) == (5, 3, 8), merged
    # probation judges 2.0.0 by its own counts: one fault in five calls (tolerated), not both versions' two
    assert rt.infer("s", "b", {})["version"] == "2.0.0"
    assert settled.wait(30)
    assert [(e["event"], e["version"]) for e in verdicts] == [("confirmed", "2.0.0")], verdicts


def test_the_ab_group_reaches_scripts_in_worker_processes(make_bundle, keys_dir) -> None:
    bundle = make_bundle(_ab("1.0.0"), name="feat", version="1.0.0")
    with Runtime({"keys": keys_dir, "isolation": "process"}) as rt:
        rt.load(bundle, ab_group="treatment")
        assert rt.infer("s", "b", {}) == {"version": "1.0.0", "group": "treatment"}
        with pytest.raises(BadInput, match="ab_group"):
            rt.load(bundle, ab_group=7)  # type: ignore[arg-type]
