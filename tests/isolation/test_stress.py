"""Kill loops: workers crashed, stuck, killed from outside and hot-swapped over and over, with calls
from several threads; afterwards the runtime serves, and nothing leaked (processes, zombies, fds).
``make test`` runs a short loop; ``make stress`` (EDGEVM_STRESS=1) the long one."""
from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path

from test_process_mode import ATTACKS, exists, pool_stats, process_children, wait_until

from vm.errors import EdgeError
from vm.host.runtime import Runtime

ROUNDS = 300 if os.environ.get("EDGEVM_STRESS") else 12


def test_kill_loop_keeps_serving_and_leaks_nothing(make_bundle, keys_dir: Path) -> None:
    fds = set(os.listdir("/proc/self/fd"))
    children = set(process_children())
    v1 = make_bundle({"features.py": ATTACKS}, name="stress", version="1.0.0")
    v2 = make_bundle({"features.py": ATTACKS}, name="stress", version="1.0.1")
    rng = random.Random(7)
    rt = Runtime({"keys": keys_dir, "isolation": "process", "workers": 2, "deadline_ms": 3000, "grace_ms": 100,
                  "breaker_failures": 1 << 20})
    rt.load(v1)
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def caller(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(ROUNDS):
            mode = r.choice(["ok", "ok", "ok", "crash", "nested"])
            try:
                rt.infer("s", "b", {"mode": mode}, deadline_ms=300 if mode == "nested" else 3000)
                kind = "ok"
            except EdgeError as exc:
                kind = exc.name
            with lock:
                outcomes[kind] = outcomes.get(kind, 0) + 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    swaps = 0
    while any(t.is_alive() for t in threads):
        action = rng.choice(["kill", "kill", "swap"])
        if action == "kill":
            pids = pool_stats(rt, "stress")["pids"]
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            rt.load(v2 if swaps % 2 == 0 else v1, allow_downgrade=True)
            swaps += 1
        threading.Event().wait(rng.uniform(0.01, 0.2))
    for t in threads:
        t.join()
    assert outcomes.get("ok", 0) > 0
    assert set(outcomes) <= {"ok", "crashed", "timeout"}, outcomes
    assert rt.infer("s", "b", {"x": 1}) == {"ok": 2}
    zygote = rt.metrics()["isolation"]["zygote_pid"]
    rt.close()
    assert wait_until(lambda: not exists(zygote))
    assert wait_until(lambda: set(process_children()) <= children), process_children()
    assert wait_until(lambda: set(os.listdir("/proc/self/fd")) <= fds), set(os.listdir("/proc/self/fd")) - fds
