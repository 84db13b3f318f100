"""Trigger config parsing and indexed event matching (clicks, needPv page views, wildcard pages)."""
from __future__ import annotations

import pytest

from vm.bundle.triggers import parse_bundle, parse_priority
from vm.errors import BadInput
from vm.execution.triggers import TriggerIndex

ENTRIES = ("rank", "features", "warm")

ARTICLE = {  # the shape of JD's end-side container config, verbatim
    "triggers": [
        {"taskName": "InferTask", "events": [{"type": "mta", "pageId": "JD_Home", "needPv": False,
                                              "clickIds": ["JD_Home_Sku"]}]},
        {"taskName": "CalcTask", "events": [{"type": "mta", "pageId": "JD_List", "needPv": True,
                                             "clickIds": ["JD_List_Sku", "JD_List_Filter"]}]},
    ],
    "tasks": {
        "InferTask": {"kind": "infer", "business": "rank", "after": ["CalcTask"], "priority": "core"},
        "CalcTask": {"kind": "calc", "business": "features"},
    },
}


def index(*bundles: tuple[str, dict]) -> TriggerIndex:
    return TriggerIndex((name, parse_bundle(m, ENTRIES)) for name, m in bundles)


def test_article_config_parses_into_a_chain() -> None:
    cfg = parse_bundle(ARTICLE, ENTRIES)
    assert [s.name for s in cfg.chain("InferTask")] == ["CalcTask", "InferTask"]
    infer = cfg.tasks["InferTask"]
    assert (infer.kind, infer.business, infer.queue) == ("infer", "rank", 0)
    assert cfg.tasks["CalcTask"].queue == 1  # calc defaults to the normal queue
    assert len(cfg.rules) == 2


def test_click_and_page_view_matching_with_need_pv() -> None:
    idx = index(("home", ARTICLE))
    click = {"type": "mta", "pageId": "JD_Home", "clickId": "JD_Home_Sku", "sku": 1}
    assert idx.match(click) == [("home", "InferTask")]
    # needPv is false for InferTask: a page view of JD_Home does not trigger it
    assert idx.match({"type": "mta", "pageId": "JD_Home"}) == []
    # needPv is true for CalcTask: a page view of JD_List does, and so do its click ids
    assert idx.match({"type": "mta", "pageId": "JD_List"}) == [("home", "CalcTask")]
    assert idx.match({"type": "mta", "pageId": "JD_List", "clickId": "JD_List_Filter"}) == [("home", "CalcTask")]
    # a click id on the wrong page, an unknown click, another event type
    assert idx.match({"type": "mta", "pageId": "JD_List", "clickId": "JD_Home_Sku"}) == []
    assert idx.match({"type": "mta", "pageId": "JD_Home", "clickId": "nope"}) == []
    assert idx.match({"type": "exposure", "pageId": "JD_Home", "clickId": "JD_Home_Sku"}) == []
    # "pv": true marks a page view even with a click id
    assert idx.match({"type": "mta", "pageId": "JD_List", "clickId": "x", "pv": True}) == [("home", "CalcTask")]


def test_wildcard_pages_several_bundles_and_dedup() -> None:
    other = {"triggers": [
        {"taskName": "rank", "events": [{"type": "mta", "clickIds": ["Buy"]}]},           # any page
        {"taskName": "rank", "events": [{"type": "mta", "pageId": "P", "clickIds": ["Buy"]}]},  # same task again
        {"taskName": "PreloadTask", "events": [{"type": "mta", "needPv": True}]},           # any page view
    ]}
    idx = index(("home", ARTICLE), ("other", other))
    assert idx.match({"type": "mta", "pageId": "P", "clickId": "Buy"}) == [("other", "rank")]
    assert idx.match({"type": "mta", "pageId": "Q", "clickId": "Buy"}) == [("other", "rank")]
    assert idx.match({"type": "mta", "pageId": "JD_List"}) == [("home", "CalcTask"), ("other", "PreloadTask")]
    assert idx.rules == 5


def test_implicit_task_names() -> None:
    cfg = parse_bundle({"triggers": [
        {"taskName": "rank", "events": [{"type": "t", "clickIds": ["c"]}]},
        {"taskName": "PreloadTask", "events": [{"type": "t", "needPv": True}]},
    ]}, ENTRIES)
    assert (cfg.tasks["rank"].kind, cfg.tasks["rank"].business) == ("infer", "rank")
    assert (cfg.tasks["PreloadTask"].kind, cfg.tasks["PreloadTask"].business, cfg.tasks["PreloadTask"].queue) == \
        ("preload", None, 2)
    single = parse_bundle({"triggers": [{"taskName": "InferTask", "events": [{"type": "t", "clickIds": ["c"]}]}]},
                          ["only"])
    assert single.tasks["InferTask"].business == "only"


def test_index_is_a_lookup_not_a_scan() -> None:
    many = {"triggers": [{"taskName": "rank", "events": [{"type": "mta", "pageId": f"P{i}",
                                                           "clickIds": [f"C{i}"]}]} for i in range(5000)]}
    idx = index(("big", many))
    assert idx.rules == 5000
    assert idx.match({"type": "mta", "pageId": "P4321", "clickId": "C4321"}) == [("big", "rank")]
    assert idx.match({"type": "mta", "pageId": "P4321", "clickId": "C1"}) == []
    assert len(idx._clicks) == 5000  # one dict entry per (type, page, click)


@pytest.mark.parametrize("manifest, message", [
    ({"triggers": {"taskName": "x"}}, "must be a list"),
    ({"triggers": [{"taskName": "Nope", "events": [{"type": "t", "clickIds": ["c"]}]}]}, "neither defined"),
    ({"triggers": [{"taskName": "rank", "events": []}]}, "non-empty list"),
    ({"triggers": [{"taskName": "rank", "events": [{"type": "t"}]}]}, "matches nothing"),
    ({"triggers": [{"taskName": "rank", "events": [{"clickIds": ["c"]}]}]}, "type must be"),
    ({"triggers": [{"taskName": "rank", "events": [{"type": "t", "needPv": "yes"}]}]}, "needPv"),
    ({"tasks": {"A": {"kind": "infer", "business": "missing"}}}, "not an entry"),
    ({"tasks": {"A": {"kind": "sing", "business": "rank"}}}, "kind"),
    ({"tasks": {"A": {"kind": "infer", "business": "rank", "after": ["B"]},
                "B": {"kind": "calc", "business": "features", "after": ["A"]}}}, "cycle"),
    ({"tasks": {"A": {"kind": "infer", "business": "rank", "uses": ["rank"]}}}, "not a calc task"),
    ({"tasks": {"A": {"kind": "infer", "business": "rank", "deadline_ms": -1}}}, "deadline_ms"),
    ({"tasks": {"A": {"kind": "infer", "business": "rank", "priority": "urgent"}}}, "priority"),
    ({"tasks": {"A": {"kind": "infer", "business": "rank", "colour": 1}}}, "unknown key"),
])
def test_bad_configs_are_refused_with_a_clear_error(manifest: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_bundle(manifest, ENTRIES)


def test_bad_events() -> None:
    idx = index(("home", ARTICLE))
    with pytest.raises(BadInput, match="type"):
        idx.match({"pageId": "JD_Home"})
    with pytest.raises(BadInput, match="pageId"):
        idx.match({"type": "mta", "pageId": 3})
    with pytest.raises(BadInput, match="clickId"):
        idx.match({"type": "mta", "pageId": "JD_Home", "clickId": ["x"]})


def test_priorities() -> None:
    assert [parse_priority(p) for p in ("core", "normal", "low", 0, 1, 2)] == [0, 1, 2, 0, 1, 2]
    for bad in ("high", 3, -1, True, None, 1.0):
        with pytest.raises(BadInput):
            parse_priority(bad)


def test_bad_trigger_configuration_is_refused_at_pack_and_load(make_bundle, keys_dir) -> None:
    from vm.errors import BadInput
    from vm.host.runtime import Runtime

    script = {"features.py": "def entry(inputs):\n    return 1\n"}
    bad = {"triggers": {"triggers": [{"taskName": "Nope", "events": [{"type": "mta", "needPv": True}]}]}}
    with pytest.raises(BadInput, match="Nope"):
        make_bundle(script, extra=bad)
    good = make_bundle(script, extra={"triggers": {"triggers": [
        {"taskName": "b", "events": [{"type": "mta", "pageId": "JD_HOME", "needPv": True}]}]}})
    with Runtime({"keys": keys_dir}) as rt:
        rt.load(good)
        assert rt.track({"type": "mta", "pageId": "JD_HOME"})
