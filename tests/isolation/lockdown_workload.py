"""The worker's workload, for the lockdown tests: what must keep running after ``apply``.

``prepare()`` runs before the lockdown (as the worker does: its model sessions and threads exist
first), ``run()`` after it. ``run`` uses ONNX Runtime, numpy, the native feature operators, the
interpreter guard, msgpack, an existing Python thread, sleeping, exceptions, garbage collection and
the kept socket, and returns a summary that the parent checks against values it computes itself.
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from dataclasses import dataclass

import msgpack
import numpy as np
import numpy.random  # noqa: F401 - numpy imports it lazily; nothing can be imported after the lockdown
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from vm.guard import _guard
from vm.ml import ops

DIM = 16


def model_bytes() -> bytes:
    """A small ranking-like model: Y = X @ W + B (MatMul + Add), W and B fixed initialisers."""
    w = np.arange(DIM * 4, dtype=np.float32).reshape(DIM, 4) / 100
    b = np.array([1, 2, 3, 4], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])],
        "rank",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, DIM])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.flatten()),
         helper.make_tensor("B", TensorProto.FLOAT, b.shape, b)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def expected_rank(x: np.ndarray) -> np.ndarray:
    """What the model computes, in numpy."""
    w = np.arange(DIM * 4, dtype=np.float32).reshape(DIM, 4) / 100
    return x @ w + np.array([1, 2, 3, 4], dtype=np.float32)


@dataclass
class Prepared:
    """What the worker holds when it locks down: a session, a waiting thread, its channel end."""

    session: ort.InferenceSession
    wake: threading.Event
    done: threading.Event
    thread: threading.Thread
    channel: socket.socket
    peer: socket.socket


def prepare() -> Prepared:
    """Create the session and a thread that waits for an event (before the lockdown)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(model_bytes(), opts, providers=["CPUExecutionProvider"])
    wake, done = threading.Event(), threading.Event()

    def waiter() -> None:
        wake.wait()
        done.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    channel, peer = socket.socketpair()
    _guard.memory_install()
    return Prepared(session, wake, done, thread, channel, peer)


def run(p: Prepared, rounds: int = 200) -> dict:
    """The workload after the lockdown; returns a summary of what it computed."""
    rng = np.random.default_rng(7)
    x = rng.random((8, DIM), dtype=np.float32)
    for _ in range(rounds):
        (y,) = p.session.run(None, {"X": x})
    a = rng.random((300, 300))
    big = np.ones(64 * 1024 * 1024 // 8)  # 64 MB: numpy's allocator mmaps this
    big[::4096] = 2.0
    big_sum = float(big.sum())
    del big
    sorted_ok = bool(np.all(np.diff(np.sort(rng.random(100_000))) >= 0))
    hashes = ops.hash_strings(["click", "view", "buy"], 1000).tolist()
    ts = np.arange(100, dtype=np.int64)
    agg = ops.window_agg(ts, np.ones(100), 99, [10, 1000])
    ids, lengths = ops.tokenize(["red running shoes", "blue hat"], 101)
    top_idx, _ = ops.top_k(np.array([0.1, 0.9, 0.5]), 2)
    _guard.budget_begin(1 << 30)
    budget = _guard.budget_end()
    p.wake.set()
    woke = p.done.wait(5)
    p.thread.join(5)
    late = threading.Thread(target=p.done.set)  # a thread started after the lockdown
    late.start()
    late.join(5)
    t0 = time.monotonic()
    time.sleep(0.02)
    slept = time.monotonic() - t0
    frame = msgpack.packb({"y": y.tolist(), "n": rounds})
    p.channel.sendall(len(frame).to_bytes(4, "little") + frame)
    size = int.from_bytes(p.peer.recv(4), "little")
    echoed = b""
    while len(echoed) < size:
        echoed += p.peer.recv(size - len(echoed))
    caught = 0
    for i in range(100):
        try:
            raise ValueError(i)
        except ValueError:
            caught += 1
    cycles = []
    for _ in range(1000):
        c: list = []
        c.append(c)
        cycles.append(c)
    del cycles
    collected = gc.collect()
    return {
        "y": y.tolist(),
        "x": x.tolist(),
        "matmul_trace": float(np.trace(a @ a.T)),
        "a_trace": float(np.sum(a * a)),
        "big_sum": big_sum,
        "sorted": sorted_ok,
        "hashes": hashes,
        "agg_count": agg[:, 0].tolist(),
        "tokens": lengths.tolist(),
        "ids_shape": list(ids.shape),
        "top": top_idx.tolist(),
        "budget_exceeded": bool(budget[1]),
        "woke": woke,
        "late_thread": not late.is_alive(),
        "slept": slept,
        "echo": msgpack.unpackb(echoed),
        "caught": caught,
        "collected": collected,
        "threads": threading.active_count(),
    }
