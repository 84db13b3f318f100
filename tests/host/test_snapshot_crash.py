"""``kill -9`` of a process activating feature snapshots, at random moments, many times: the
reopened store serves a version at least as new as the last one acknowledged, its data intact and
verified, and its state file is never damaged (``make test`` runs a short loop, ``make stress``
(EDGEVM_STRESS=1) a long one)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from vm.bundle import keys as keys_mod
from vm.host.snapshots import STATE_FILE, SnapshotStore
from vm.tools import snapshot as builder

ROUNDS = 60 if os.environ.get("EDGEVM_STRESS") else 6
VERSIONS = 8 * ROUNDS  # more than the rounds can acknowledge
CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from vm.bundle import keys
    from vm.host.snapshots import SnapshotStore

    src, store_dir, key_dir = map(Path, sys.argv[1:4])
    store = SnapshotStore(store_dir, keys.load_device(key_dir), max_bytes=1 << 30)
    floor = store.floor("pop")
    print("ready", flush=True)
    for v in range(int(floor.split(".")[0]) + 1 if floor else 1, int(sys.argv[4]) + 1):
        store.activate((src / f"pop-{v}.evs").read_bytes())
        print(v, flush=True)
    sys.stdin.read()
""")


def test_kill_9_during_activation_never_loses_an_acknowledged_snapshot(tmp_path: Path, keys_dir: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for v in range(1, VERSIONS + 1):
        builder.build("pop", f"{v}.0", keys_dir, src / f"pop-{v}.evs", encrypt=v % 2 == 0,
                      columns={"score": np.full(20_000, v, dtype=np.float32)})
    device = keys_mod.load_device(keys_dir)
    rng = random.Random(1234)
    store_dir = tmp_path / "store"
    last = 0
    for _ in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(store_dir), str(keys_dir),
                                  str(VERSIONS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        acked = last
        for _ in range(rng.randrange(0, 8)):  # let it acknowledge a few activations, then kill it mid-way
            line = child.stdout.readline().strip()
            if not line.isdigit():
                break
            acked = int(line)
        time.sleep(rng.uniform(0, 0.02))  # somewhere in the next activation
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stdin.close()  # type: ignore[union-attr]
        if (store_dir / STATE_FILE).exists():  # whole or absent, never half written
            assert json.loads((store_dir / STATE_FILE).read_text())["format"] == 1
        store = SnapshotStore(store_dir, device, max_bytes=1 << 30)
        snap = store.current().get("pop")
        if acked == 0:
            continue
        assert snap is not None, f"acknowledged {acked}, the restart serves nothing"
        served = int(snap.version.split(".")[0])
        assert served >= acked and store.floor("pop") == snap.version
        assert float(snap.data["score"].min()) == float(snap.data["score"].max()) == served
        last = served
        store_dir_files = sorted(p.name for p in (store_dir / "pop").iterdir() if not p.name.startswith("."))
        assert f"{snap.version}.evs" in store_dir_files
