"""``kill -9`` of the updating process at random moments of a check (metadata, download,
activation, swap), many times: every restart serves the old version or the new one, never a
broken or missing one, and the state file is never damaged. ``make test`` runs a short loop,
``make stress`` (EDGEVM_STRESS=1) a long one."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from update_fixtures import channel, features  # noqa: F401 - fixtures

from vm.host.runtime import Runtime

ROUNDS = 60 if os.environ.get("EDGEVM_STRESS") else 6
CHILD = Path(__file__).with_name("crash_child.py")


def _start(config: dict) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, str(CHILD), json.dumps(config)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def _served(keys_dir: Path, update: dict) -> str | None:
    """What a restarted device serves, with its channel unreachable."""
    with Runtime({"keys": keys_dir, "isolation": "thread", "update": {**update, "channel": "/nonexistent"}}) as rt:
        loaded = {b["name"]: b["version"] for b in rt.bundles()}
        if "feat" not in loaded:
            return None
        answer = rt.infer("s", "b", {})["version"]
        assert answer == loaded["feat"]
        return answer


def test_kill_9_during_an_update_leaves_old_or_new_never_broken(make_bundle, channel, keys_dir, tmp_path) -> None:
    rng = random.Random(16)
    versions = [f"1.0.{i}" for i in range(ROUNDS + 2)]
    bundles = {v: make_bundle(features(v), name="feat", version=v) for v in versions}
    state = tmp_path / "state"
    update = {"channel": str(channel.dir), "state_dir": str(state), "root": str(channel.root), "interval_s": 0,
              "device_id": "crash"}
    config = {"keys": str(keys_dir), "isolation": "thread", "update": update}
    channel.publish(bundles[versions[0]])
    child = _start(config)  # one unkilled check: how long the window to kill in is
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    window = float(child.stdout.readline().split()[1])  # how long one check takes in the child
    child.communicate(timeout=60)
    assert child.returncode == 0
    served = _served(keys_dir, update)
    assert served == versions[0]
    killed_before_done = 0
    for new in versions[1:]:
        channel.publish(bundles[new])
        child = _start(config)
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        time.sleep(rng.uniform(0, window * 1.5))  # the pipe and the wake-up add a little
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=60)
        if "done" in out:  # the kill came too late: aim earlier
            window = float(out.split()[1])
        else:
            killed_before_done += 1
        now = _served(keys_dir, update)
        assert now is not None, "a restart serves nothing"
        assert now == served or now == new or versions.index(now) > versions.index(served), (served, new, now)
        served = now
        assert not list(state.glob("*.damaged-*")), "the state file was damaged"
    assert killed_before_done, "no kill landed inside a check: the loop tested nothing"
