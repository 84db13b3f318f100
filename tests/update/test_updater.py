"""The device's updater end to end: publish, check, download, verify, activate, hot swap; staged
rollout and device classes; automatic rollback of a bad version that is then never retried; the
persisted downgrade floor; the fallback bundles served before any update."""
from __future__ import annotations

from conftest import events, features


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
