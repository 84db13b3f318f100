"""Process isolation, attacked by class: what a script does to its worker process (crash it, hold
its interpreter in C, blow its memory, poison library state, try the OS) never reaches the host or
another bundle; callers get typed errors at their deadlines; lost workers are replaced; nothing is
left behind (processes, zombies, fds). Real processes throughout."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from vm.errors import Closed, Crashed, EdgeError, ResourceExhausted, ScriptError, Timeout
from vm.host.runtime import Runtime

# A chain of map objects deep enough that next() overflows the C stack: a segfault in any CPython.
CRASH = """
def crash():
    it = iter([1])
    for _ in range(200_000):
        it = map(abs, it)
    return next(it)
"""

ATTACKS = CRASH + """
import math
import numpy as np

KEPT = []


def entry(inputs):
    mode = inputs.get("mode", "ok")
    if mode == "ok":
        return {"ok": inputs.get("x", 0) + 1}
    if mode == "crash":
        return crash()
    if mode == "nested":  # C iterating C: one call that holds the interpreter for many seconds
        return sum(map(sum, [range(1 << 20)] * 100_000))
    if mode == "compare":  # max() compares a list with itself item by item, a hundred thousand times
        return len(max([list(range(1 << 20))] * 100_000))
    if mode == "python_loop":
        while True:
            pass
    if mode == "numpy_bomb":
        return float(np.ones((1 << 27,), dtype=np.float64).sum())
    if mode == "keep":  # memory kept across calls
        KEPT.append(np.ones((1 << 20,), dtype=np.float64) + len(KEPT))
        return len(KEPT)
    if mode == "finfo":
        np.finfo(np.float32).eps = 42.0
        return float(np.finfo(np.float32).eps)
    if mode == "read_finfo":
        return float(np.finfo(np.float32).eps)
    raise ValueError(mode)
"""


def process_children() -> dict[int, str]:
    """pid -> state of every process whose parent is this test process."""
    me, out = os.getpid(), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:
            out[int(entry)] = fields[0]
    return out


def exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def pool_stats(rt: Runtime, name: str) -> dict:
    pools = rt.metrics()["isolation"]["pools"]
    return next(v for k, v in pools.items() if k.startswith(name + " "))


@pytest.fixture
def attacks(make_bundle) -> Path:
    return make_bundle({"features.py": ATTACKS}, name="attacks")


@pytest.fixture
def rt(keys_dir: Path):
    with Runtime({"keys": keys_dir, "isolation": "process", "deadline_ms": 3000, "memory_limit_mb": 64}) as r:
        yield r


def test_runs_in_a_locked_down_worker_process(keys_dir: Path, attacks: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEVM_TEST_HOST_SECRET", "s3cr3t")  # the host's environment never reaches a worker
    with Runtime({"keys": keys_dir, "isolation": "process"}) as rt:
        _check_locked_down(rt, attacks)


def _check_locked_down(rt: Runtime, attacks: Path) -> None:
    rt.load(attacks)
    assert rt.infer("s", "b", {"x": 1}) == {"ok": 2}
    (pid,) = pool_stats(rt, "attacks")["pids"]
    assert pid != os.getpid() and exists(pid)
    status = Path(f"/proc/{pid}/status").read_text()
    assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status
    assert len(os.listdir(f"/proc/{pid}/fd")) == 1  # its channel, nothing else
    # /proc shows the block the zygote was exec'd with (what the supervisor chose); the host's is not in it
    launched = dict(v.split(b"=", 1) for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if v)
    assert b"EDGEVM_TEST_HOST_SECRET" not in launched and b"s3cr3t" not in b"".join(launched.values())
    assert set(launched) <= {b"OPENBLAS_NUM_THREADS", b"OMP_NUM_THREADS", b"MKL_NUM_THREADS", b"NUMEXPR_NUM_THREADS",
                             b"MALLOC_ARENA_MAX", b"EDGEVM_ZYGOTE_FD", b"EDGEVM_ZYGOTE_PATH", b"PYTHONMALLOC",
                             b"EDGEVM_PYTHONHOME"}
    limits = Path(f"/proc/{pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"]
    data = next(line for line in limits.splitlines() if line.startswith("Max data size"))
    assert data.split()[3] != "unlimited"
    zygote = rt.metrics()["isolation"]["zygote_pid"]
    assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == zygote


def test_a_crashing_script_is_a_typed_error_and_the_host_serves_on(rt: Runtime, attacks: Path,
                                                                 make_bundle) -> None:
    rt.load(attacks)
    other = make_bundle({"features.py": "def entry(inputs):\n    return 'other'\n"}, name="other", system="o")
    rt.load(other)
    before = pool_stats(rt, "attacks")["pids"]
    with pytest.raises(Crashed, match="SIGSEGV") as info:
        rt.infer("s", "b", {"mode": "crash"})
    assert info.value.code == 14 and info.value.name == "crashed"
    assert rt.infer("s", "b", {"x": 2}) == {"ok": 3}  # served at once by the spare
    assert rt.infer("o", "b", {}) == "other"
    assert pool_stats(rt, "attacks")["pids"] != before
    assert pool_stats(rt, "attacks")["crashed"] == 1


@pytest.mark.parametrize("mode", ["nested", "compare"])
def test_a_c_loop_that_holds_the_interpreter_is_answered_at_the_deadline(keys_dir: Path, attacks: Path,
                                                                        mode: str) -> None:
    with Runtime({"keys": keys_dir, "isolation": "process", "deadline_ms": 300, "grace_ms": 100}) as rt:
        rt.load(attacks)
        (stuck,) = pool_stats(rt, "attacks")["pids"]
        t0 = time.monotonic()
        with pytest.raises(Timeout):
            rt.infer("s", "b", {"mode": mode})
        waited = time.monotonic() - t0
        assert rt.infer("s", "b", {"x": 1}) == {"ok": 2}  # the spare took over
        assert wait_until(lambda: not exists(stuck)), "the stuck worker was not killed"
        assert waited < 5.0  # not minutes (no timing bound beyond that: the machine is shared)
        assert pool_stats(rt, "attacks")["killed"] == 1


def test_a_python_loop_is_stopped_inside_the_worker_without_killing_it(keys_dir: Path, attacks: Path) -> None:
    with Runtime({"keys": keys_dir, "isolation": "process", "deadline_ms": 200, "grace_ms": 2000}) as rt:
        rt.load(attacks)
        (pid,) = pool_stats(rt, "attacks")["pids"]
        with pytest.raises(Timeout):
            rt.infer("s", "b", {"mode": "python_loop"})
        assert rt.infer("s", "b", {"x": 1}) == {"ok": 2}
        assert pool_stats(rt, "attacks")["killed"] == 0
        # it missed its deadline, so the spare served the next call; it answered within the grace
        # period (its watchdog stopped the script) and is the spare now
        assert wait_until(lambda: pid in pool_stats(rt, "attacks")["pids"] + pool_stats(rt, "attacks")["spare_pids"])
        assert exists(pid)


def test_memory_blowups_stay_in_the_worker(rt: Runtime, attacks: Path) -> None:
    rt.load(attacks)
    with pytest.raises(ResourceExhausted):
        rt.infer("s", "b", {"mode": "numpy_bomb"})  # 1 GiB under a 64 MB budget
    kept = 0
    with pytest.raises(EdgeError) as info:  # 8 MB kept per call: the worker's own limit ends it
        for _ in range(64):
            kept = rt.infer("s", "b", {"mode": "keep"})
    assert isinstance(info.value, (ResourceExhausted, Crashed)), info.value
    assert 0 < kept < 64
    assert rt.infer("s", "b", {"x": 0}) == {"ok": 1}


def _expand_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Expand", ["x", "shape"], ["y"])], "expand",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_onnx_runtime_allocations_are_bounded_by_the_worker(rt: Runtime, make_bundle) -> None:
    script = """
import numpy as np
import edge

def entry(inputs):
    out = edge.model("m").run({"x": np.ones((1,), np.float32), "shape": np.array([inputs["n"]], np.int64)})
    return int(out["y"].shape[0])
"""
    bundle = make_bundle({"features.py": script}, name="ortbomb", extra={"models": {"m": "m.onnx"}},
                         binary={"m.onnx": _expand_model()})
    rt.load(bundle)
    assert rt.infer("s", "b", {"n": 1000}) == 1000
    with pytest.raises((ScriptError, ResourceExhausted, Crashed)):
        rt.infer("s", "b", {"n": 1 << 29})  # 2 GiB in ONNX Runtime's own allocator
    assert rt.infer("s", "b", {"n": 10}) == 10


def test_library_state_one_bundle_changes_reaches_no_other_bundle_nor_the_host(rt: Runtime, make_bundle) -> None:
    import numpy as np

    a = make_bundle({"features.py": ATTACKS}, name="poisoner")
    b = make_bundle({"features.py": ATTACKS}, name="victim", system="v")
    rt.load(a)
    rt.load(b)
    assert rt.infer("s", "b", {"mode": "finfo"}) != 42.0  # finfo hands each caller a copy: no change sticks
    assert rt.infer("v", "b", {"mode": "read_finfo"}) == float(np.finfo(np.float32).eps)
    assert float(np.finfo(np.float32).eps) != 42.0


def test_a_worker_killed_from_outside_is_replaced(rt: Runtime, attacks: Path) -> None:
    rt.load(attacks)
    (pid,) = pool_stats(rt, "attacks")["pids"]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: pool_stats(rt, "attacks")["pids"] not in ([pid], []))
    assert rt.infer("s", "b", {"x": 5}) == {"ok": 6}
    # and killed in the middle of a call: that call fails with the signal, the next one works
    results: list = []
    t = threading.Thread(target=lambda: results.append(_outcome(rt, {"mode": "python_loop"})))
    t.start()
    assert wait_until(lambda: pool_stats(rt, "attacks")["busy"] == 1)
    (busy,) = pool_stats(rt, "attacks")["pids"]
    os.kill(busy, signal.SIGKILL)
    t.join(10)
    assert isinstance(results[0], Crashed) and "SIGKILL" in str(results[0])
    assert rt.infer("s", "b", {"x": 1}) == {"ok": 2}


def _outcome(rt: Runtime, inputs: dict) -> object:
    try:
        return rt.infer("s", "b", inputs)
    except EdgeError as exc:
        return exc


def test_a_bundle_whose_workers_keep_crashing_fails_fast(keys_dir: Path, attacks: Path) -> None:
    with Runtime({"keys": keys_dir, "isolation": "process", "deadline_ms": 3000, "breaker_failures": 3}) as rt:
        rt.load(attacks)
        errors = [_outcome(rt, {"mode": "crash"}) for _ in range(5)]
        assert [type(e).__name__ for e in errors[:3]] == ["Crashed"] * 3
        assert all(e.name == "circuit_open" for e in errors[3:]), errors
        assert pool_stats(rt, "attacks")["crashed"] == 3


def test_load_errors_are_typed_and_leave_no_worker(rt: Runtime, make_bundle) -> None:
    children = set(process_children())
    raising = make_bundle({"features.py": "x = 1\nraise KeyError('boot')\n\ndef entry(inputs):\n    return x\n"},
                          name="raising")
    with pytest.raises(ScriptError, match=r"features.py:2: KeyError"):
        rt.load(raising)
    crashing = make_bundle({"features.py": CRASH + "\ncrash()\n\ndef entry(inputs):\n    return 1\n"}, name="boom")
    with pytest.raises(Crashed, match="SIGSEGV"):
        rt.load(crashing)
    assert rt.bundles() == []
    assert set(process_children()) == children  # only the zygote, as before


def test_a_new_version_starts_before_the_swap_and_calls_in_flight_finish_on_the_old(rt: Runtime,
                                                                                  make_bundle) -> None:
    slow = """
import time

def entry(inputs):
    t = time.monotonic()
    while time.monotonic() - t < inputs.get("wait", 0):
        pass
    return VERSION
"""
    v1 = make_bundle({"features.py": "VERSION = 1\n" + slow}, name="swap", version="1.0.0")
    v2 = make_bundle({"features.py": "VERSION = 2\n" + slow}, name="swap", version="2.0.0")
    rt.load(v1)
    old = pool_stats(rt, "swap")["pids"]
    results: list = []
    t = threading.Thread(target=lambda: results.append(rt.infer("s", "b", {"wait": 0.5})))
    t.start()
    assert wait_until(lambda: pool_stats(rt, "swap")["busy"] == 1)
    queued: list = []  # routed to v1 before the swap, waiting for its only worker
    rt.infer_async("s", "b", b"\x80", lambda status, data: queued.append((status, data)), priority="core")
    rt.load(v2)
    assert rt.infer("s", "b", {}) == 2
    t.join(10)
    assert results == [1]
    assert wait_until(lambda: bool(queued)) and queued == [(0, b"\x01")]  # served by v1, as in thread mode
    assert wait_until(lambda: not any(exists(p) for p in old)), "the old version's workers did not exit"


def test_unload_and_close_leave_no_process_zombie_or_fd(keys_dir: Path, attacks: Path) -> None:
    fds = set(os.listdir("/proc/self/fd"))
    children = set(process_children())
    rt = Runtime({"keys": keys_dir, "isolation": "process", "deadline_ms": 5000, "close_timeout_ms": 200})
    rt.load(attacks)
    workers = pool_stats(rt, "attacks")["pids"]
    zygote = rt.metrics()["isolation"]["zygote_pid"]
    rt.unload("attacks")
    assert wait_until(lambda: not any(exists(p) for p in workers))
    rt.load(attacks)
    done: list = []
    for _ in range(3):
        rt.infer_async("s", "b", b"\x81\xa4mode\xabpython_loop", lambda status, data: done.append(status))
    assert wait_until(lambda: pool_stats(rt, "attacks")["busy"] == 1)
    rt.close()
    assert sorted(done) == [Closed.code] * 3
    assert wait_until(lambda: not exists(zygote))
    assert wait_until(lambda: set(process_children()) <= children), process_children()
    assert not [p for p, s in process_children().items() if s == "Z"]
    assert wait_until(lambda: set(os.listdir("/proc/self/fd")) <= fds), set(os.listdir("/proc/self/fd")) - fds


def test_two_workers_serve_two_calls_at_once(keys_dir: Path, make_bundle) -> None:
    slow = "import time\n\ndef entry(inputs):\n    t = time.monotonic()\n    while time.monotonic() - t < 0.5:\n" \
           "        pass\n    return 1\n"
    bundle = make_bundle({"features.py": slow}, name="par")
    with Runtime({"keys": keys_dir, "isolation": "process", "workers": 2, "deadline_ms": 5000}) as rt:
        rt.load(bundle)
        assert len(pool_stats(rt, "par")["pids"]) == 2
        threads = [threading.Thread(target=rt.infer, args=("s", "b", {})) for _ in range(2)]
        for t in threads:
            t.start()
        assert wait_until(lambda: pool_stats(rt, "par")["busy"] == 2, 5.0)
        for t in threads:
            t.join()


def test_a_spare_rehearses_the_latest_request_before_it_serves(rt: Runtime, make_bundle) -> None:
    counter = "CALLS = []\n\ndef entry(inputs):\n    CALLS.append(inputs['x'])\n    return list(CALLS)\n"
    rt.load(make_bundle({"features.py": counter}, name="rehearse"))
    assert rt.infer("s", "b", {"x": 1}) == [1]
    assert wait_until(lambda: pool_stats(rt, "rehearse")["spares"] == 1 and pool_stats(rt, "rehearse")["starting"] == 0)
    (active,) = pool_stats(rt, "rehearse")["pids"]
    os.kill(active, signal.SIGKILL)
    assert wait_until(lambda: pool_stats(rt, "rehearse")["pids"] not in ([active], []))
    assert rt.infer("s", "b", {"x": 2}) == [1, 2]  # the spare ran {"x": 1} once already, in its own process


def test_a_dead_zygote_is_restarted_and_the_bundles_served_again(rt: Runtime, attacks: Path) -> None:
    rt.load(attacks)
    zygote = rt.metrics()["isolation"]["zygote_pid"]
    workers = pool_stats(rt, "attacks")["pids"]
    os.kill(zygote, signal.SIGKILL)
    assert wait_until(lambda: not any(exists(p) for p in workers)), "workers outlived their zygote"
    assert wait_until(lambda: rt.metrics()["isolation"]["zygote_pid"] != zygote)
    assert wait_until(lambda: _outcome(rt, {"x": 1}) == {"ok": 2}, 30)
    assert wait_until(lambda: not exists(zygote))  # the old one was reaped
