"""A crash loop across restarts (thread mode: the scripts run in the host's process, so a bad
version can take the whole app down): when the process ends ``crash_loop_restarts`` runs in a row
without a clean shutdown while a new version is on probation, the next start rolls back to the
last good version, marks the new one bad and reports it; a clean shutdown in between resets the
count. Real child processes, ended by ``kill -9`` and by ``os._exit``."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from update_fixtures import channel, features  # noqa: F401 - fixtures

from vm.host.runtime import Runtime
from vm.update.state import State

CHILD = Path(__file__).with_name("crash_loop_child.py")


def _run(config: dict, end: str, *args: str) -> dict[str, Any]:
    """One run of the child: what it served and the update events it saw; ended by ``end``
    (``kill``: SIGKILL, ``exit``: os._exit, ``close``: a clean shutdown)."""
    child = subprocess.Popen([sys.executable, str(CHILD), json.dumps(config), *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    line = child.stdout.readline()
    if end == "kill":
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL
    else:
        child.communicate(f"{end}\n", timeout=60)
        assert child.returncode == (3 if end == "exit" else 0), child.returncode
    assert line, "the child said nothing"
    return json.loads(line)


def _setup(make_bundle, channel, keys_dir: Path, tmp_path: Path) -> dict:
    """A device whose 1.0.0 passed probation, with 2.0.0 published; the child's config."""
    update = {"channel": str(channel.dir), "state_dir": str(tmp_path / "state"), "root": str(channel.root),
              "interval_s": 0, "device_id": "loop", "probation_calls": 1000, "crash_loop_restarts": 2}
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    confirmed = threading.Event()
    with Runtime({"keys": keys_dir, "isolation": "thread", "update": {**update, "probation_calls": 1}}) as rt:
        rt.set_update_listener(lambda e: e["event"] == "confirmed" and confirmed.set())
        rt.update_now()
        rt.infer("s", "b", {})
        assert confirmed.wait(30)
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    return {"keys": str(keys_dir), "isolation": "thread", "update": update}


def test_a_version_active_when_the_process_died_twice_in_a_row_is_rolled_back(
        make_bundle, channel, keys_dir, tmp_path) -> None:
    config = _setup(make_bundle, channel, keys_dir, tmp_path)
    assert _run(config, "kill", "update")["served"] == "2.0.0"  # activated, then killed on probation
    second = _run(config, "exit")  # the first unclean end is counted; 2.0.0 still serves
    assert second["served"] == "2.0.0" and second["events"] == []
    third = _run(config, "close", "update")  # the second: rolled back before 2.0.0 loads again
    assert third["served"] == "1.0.0"
    rolled = [e for e in third["events"] if e["event"] == "rolled_back"]
    assert len(rolled) == 1 and rolled[0]["version"] == "2.0.0" and rolled[0]["to"] == "1.0.0", third
    assert "crash loop" in rolled[0]["reason"]
    assert [e["event"] for e in third["events"] if e["event"] != "rolled_back"] == ["checked"]  # never retried
    bs = State.load(tmp_path / "state").bundles["feat"]
    assert bs.bad == ["2.0.0"] and bs.active == "1.0.0" and bs.crashes == 0
    assert _run(config, "kill")["served"] == "1.0.0"  # the good version's unclean ends count for nothing
    assert _run(config, "kill")["served"] == "1.0.0"


def test_a_clean_shutdown_in_between_resets_the_count(make_bundle, channel, keys_dir, tmp_path) -> None:
    config = _setup(make_bundle, channel, keys_dir, tmp_path)
    assert _run(config, "kill", "update")["served"] == "2.0.0"
    assert _run(config, "close")["served"] == "2.0.0"  # counted one, then shut down cleanly: reset
    assert _run(config, "kill")["served"] == "2.0.0"
    run = _run(config, "close")  # one unclean end since the clean one: below the limit
    assert run["served"] == "2.0.0" and run["events"] == []
    assert State.load(tmp_path / "state").bundles["feat"].bad == []
