"""The loader is the one gate: a correctly signed bundle whose manifest or contents disagree is
refused with a typed error, and the downgrade check holds under concurrent loads."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import resign

from vm.bundle.loader import open_bundle
from vm.errors import BadInput, Downgrade
from vm.host.runtime import Runtime


def _script(version: str, top_level_ms: int = 0) -> dict[str, str]:
    busy = (f"import time\n_t = time.monotonic()\nwhile time.monotonic() - _t < {top_level_ms / 1000}:\n"
            f"    pass\n") if top_level_ms else ""
    return {"features.py": f"{busy}VERSION = {version!r}\n\ndef entry(inputs):\n    return {{'v': VERSION}}\n"}


def test_concurrent_loads_never_install_the_older_version(make_bundle, keys_dir: Path) -> None:
    # v1 passes the early version check, then runs a slow module top level; meanwhile v2 loads and
    # is installed. v1 must then be refused at the swap, not installed over v2.
    v1 = make_bundle(_script("1.0.0", top_level_ms=400), version="1.0.0")
    v2 = make_bundle(_script("2.0.0"), version="2.0.0")
    for _ in range(3):
        with Runtime({"keys": keys_dir, "load_deadline_ms": 10_000}) as rt:
            outcome: list[BaseException | None] = []
            t = threading.Thread(target=_load_into, args=(rt, v1, outcome))
            t.start()
            rt.load(v2)
            t.join()
            assert [b["version"] for b in rt.bundles()] == ["2.0.0"]
            assert rt.infer("s", "b", {}) == {"v": "2.0.0"}
            assert isinstance(outcome[0], Downgrade)


def _load_into(rt: Runtime, bundle: Path, outcome: list[BaseException | None]) -> None:
    try:
        rt.load(bundle)
        outcome.append(None)
    except Downgrade as exc:
        outcome.append(exc)


def _loaded(make_bundle, keys_dir: Path) -> bytes:
    return make_bundle({"features.py": "def entry(inputs):\n    return {}\n"}).read_bytes()


@pytest.mark.parametrize("edit, message", [
    (lambda h, p: p["manifest"].update(version="9.9.9"), "its manifest"),
    (lambda h, p: p["manifest"].update(entries={"b": "missing:entry"}), "which the bundle lacks"),
    (lambda h, p: p["manifest"].update(entries={"b": "not an entry"}), "must be 'module:function'"),
    (lambda h, p: p["manifest"].update(trigers=[]), "did you mean 'triggers'"),
    (lambda h, p: p["manifest"].update(triggers=[{"taskName": "nope", "events": [{"type": "t", "clickIds": ["c"]}]}]),
     "neither defined"),
    (lambda h, p: p["manifest"].update(system=""), "'system'"),
    (lambda h, p: p["manifest"].update(models={"m": "m.onnx"}), "disagree on the models"),
    (lambda h, p: p["manifest"]["modules"].update(features="not a dict"), "something other than an object"),
    (lambda h, p: p.update(manifest=["not", "a", "dict"]), "lacks its manifest"),
])
def test_signed_bundle_with_a_bad_manifest_is_refused(make_bundle, keys_dir: Path, device, edit, message) -> None:
    data = resign(_loaded(make_bundle, keys_dir), keys_dir, edit)
    with pytest.raises(BadInput, match=message):
        open_bundle(data, device, max_size=1 << 26)


def test_resigned_bundle_without_edits_opens(make_bundle, keys_dir: Path, device) -> None:
    data = resign(_loaded(make_bundle, keys_dir), keys_dir, lambda h, p: None)
    assert open_bundle(data, device, max_size=1 << 26).manifest.entries == {"b": "features:entry"}
