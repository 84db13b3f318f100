"""The Python side of the C API (``libedgevm``; see ``native/capi/edgevm.h`` and ``native/capi/``).

``libedgevm`` is a cffi embedding library. Its init code (``build.py``) makes this package
importable and calls :func:`install`, which attaches the functions that C calls with the GIL held
(``edgevm__py_*``: open, load, track, metrics, listener, update, close) and starts the dispatcher thread.

Inference does not come through here with the GIL: the host thread queues a job in C and waits
in C. The dispatcher thread blocks in ``edgevm__take_job()`` (GIL released), hands each job to
``Runtime.infer_async`` and finishes it from the runtime's completion callback through
``edgevm__finish_job()``; exactly once per job, whatever happens.

Every function here catches everything: the C caller gets a status code and the calling thread's
error message (``edgevm__set_error``), never a Python exception.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from vm.errors import OK, BadInput, Closed, EdgeError, Internal, Timeout
from vm.isolation import supervisor

DEFAULT_MARGIN_MS = 25
DEFAULT_SPIN_US = 200

_ffi: Any = None
_lib: Any = None
_runtimes: dict[int, Any] = {}
_lock = threading.Lock()
_dispatcher: threading.Thread | None = None


def install(ffi: Any, lib: Any) -> None:
    """Attach the ``edgevm__py_*`` functions and start the dispatcher (once per process)."""
    global _ffi, _lib, _dispatcher
    if _dispatcher is not None:
        return
    _ffi, _lib = ffi, lib
    _setup_logging(os.environ.get("EDGEVM_LOG", ""))
    # sys.executable is the host program here: worker zygotes start from the launcher beside the library
    here = ffi.string(lib.edgevm__library_path()).decode("utf-8", "surrogateescape")
    supervisor.launcher = os.path.join(os.path.dirname(os.path.abspath(here)), supervisor.LAUNCHER_NAME)
    for fn in (edgevm__py_init, edgevm__py_open, edgevm__py_load, edgevm__py_track, edgevm__py_metrics,
               edgevm__py_listen, edgevm__py_update_now, edgevm__py_update_listen, edgevm__py_close):
        ffi.def_extern(name=fn.__name__)(fn)
    _dispatcher = threading.Thread(target=_dispatch_loop, name="edgevm-capi-dispatch", daemon=True)
    _dispatcher.start()


def _setup_logging(level: str) -> None:
    """The runtime logs through ``logging``; inside a host app nothing reaches stderr unless
    ``EDGEVM_LOG`` names a level (``warning``, ``info``, ``debug``)."""
    import logging

    if level and logging.getLevelName(level.upper()) in range(0, 60):
        logging.basicConfig(level=level.upper(), format="edgevm: %(levelname)s %(name)s: %(message)s")
    else:
        logging.getLogger("edgevm").addHandler(logging.NullHandler())


# -- status protocol -------------------------------------------------------------------------------

def _message(exc: BaseException) -> str:
    if isinstance(exc, EdgeError):
        return " ".join(exc.message.split()) or exc.name
    return f"{type(exc).__name__}: {exc}"


def _run(status: Any, what: str, fn: Callable[[], None]) -> None:
    """Run ``fn``; report 0, or an error code plus the thread's message, through ``status[0]``."""
    try:
        fn()
    except EdgeError as exc:
        _lib.edgevm__set_error(f"{what}: {_message(exc)}".encode("utf-8", "replace"))
        status[0] = exc.code
        return
    except BaseException as exc:  # noqa: BLE001 - nothing may escape into C
        _lib.edgevm__set_error(f"{what}: internal error: {_message(exc)}".encode("utf-8", "replace"))
        status[0] = Internal.code
        return
    status[0] = OK


def _runtime(handle: int) -> Any:
    rt = _runtimes.get(handle)
    if rt is None:
        raise Closed("the handle was closed")
    return rt


# -- functions C calls with the GIL held --------------------------------------------------------------

def edgevm__py_init(status: Any) -> None:
    status[0] = OK


def edgevm__py_open(config_json: Any, handle: int, info: Any, status: Any) -> None:
    def run() -> None:
        raw = _ffi.string(config_json)
        try:
            config = json.loads(raw)
        except ValueError as exc:  # includes UnicodeDecodeError
            raise BadInput(f"config_json is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise BadInput(f"config_json must be a JSON object, not {type(config).__name__}")
        margin = config.pop("capi_margin_ms", DEFAULT_MARGIN_MS)
        if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= 60_000:
            raise BadInput(f"config 'capi_margin_ms' must be an integer in [0, 60000], got {margin!r}")
        spin = config.pop("capi_spin_us", DEFAULT_SPIN_US)
        if isinstance(spin, bool) or not isinstance(spin, int) or not 0 <= spin <= 100_000:
            raise BadInput(f"config 'capi_spin_us' must be an integer in [0, 100000], got {spin!r}")
        if "log" in config:
            raise BadInput("config option 'log' is not available through the C API")
        from vm.host.runtime import Runtime

        rt = Runtime(config)
        info.deadline_ms = int(rt.deadline_ms)
        info.margin_ms = margin
        info.spin_us = spin
        info.max_input = int(rt.max_input_bytes)
        info.max_bundle = int(rt.max_bundle_bytes)
        with _lock:
            _runtimes[handle] = rt

    _run(status, "edgevm_open", run)


def edgevm__py_load(handle: int, data: Any, length: int, path: Any, status: Any) -> None:
    def run() -> None:
        rt = _runtime(handle)
        if path != _ffi.NULL:
            rt.load(os.fsdecode(_ffi.string(path)))
        else:
            rt.load(_ffi.buffer(data, length)[:])

    _run(status, "edgevm_load_file" if path != _ffi.NULL else "edgevm_load_bundle", run)


def edgevm__py_track(handle: int, data: Any, length: int, status: Any) -> None:
    _run(status, "edgevm_track", lambda: _runtime(handle).track_msgpack(_ffi.buffer(data, length)[:]))


def _out(doc: Any, out: Any, out_len: Any) -> None:
    """Hand ``doc`` to the C caller as a msgpack buffer it owns (``edgevm_free``)."""
    data = msgpack.packb(doc, use_bin_type=True, default=_plain)
    buf = _lib.edgevm__out_alloc(len(data))
    if buf == _ffi.NULL:
        raise Internal("out of memory")
    _ffi.memmove(buf, data, len(data))
    out[0] = buf
    out_len[0] = len(data)


def edgevm__py_metrics(handle: int, out: Any, out_len: Any, status: Any) -> None:
    def run() -> None:
        rt = _runtime(handle)
        doc = rt.metrics()
        counters = _ffi.new("edgevm_counters_t *")
        if _lib.edgevm__counters(handle, counters) == 0:
            doc["capi"] = {name: int(getattr(counters, name)) for name in (
                "sync_calls", "async_calls", "c_timeouts", "callbacks", "events", "events_dropped",
                "pending_async", "queued")}
        _out(doc, out, out_len)

    _run(status, "edgevm_metrics", run)


def edgevm__py_update_now(handle: int, out: Any, out_len: Any, status: Any) -> None:
    _run(status, "edgevm_update_now", lambda: _out(_runtime(handle).update_now(), out, out_len))


def edgevm__py_update_listen(handle: int, on: int, status: Any) -> None:
    def run() -> None:
        rt = _runtime(handle)
        rt.set_update_listener(_UpdateListener(handle) if on else None)

    _run(status, "edgevm_set_update_listener", run)


def edgevm__py_listen(handle: int, on: int, status: Any) -> None:
    def run() -> None:
        rt = _runtime(handle)
        rt.set_listener(_Listener(handle) if on else None)

    _run(status, "edgevm_set_listener", run)


def edgevm__py_close(handle: int, status: Any) -> None:
    def run() -> None:
        with _lock:
            rt = _runtimes.pop(handle, None)
        if rt is None:
            raise Closed("the handle was already closed")
        rt.close()

    _run(status, "edgevm_close", run)


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


# -- listener ------------------------------------------------------------------------------------------

class _Listener:
    """Runtime listener that forwards each task result to the handle's C listener as msgpack."""

    __slots__ = ("handle",)

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __call__(self, event: dict) -> None:
        try:
            data = pack_event(event)
        except Exception as exc:  # noqa: BLE001 - report the bad event instead of dropping it silently
            data = pack_event({"task_id": event.get("task_id") if isinstance(event, dict) else None,
                               "status": Internal.code, "result": None,
                               "error": f"edgevm: cannot serialise the task event: {exc}"})
        _lib.edgevm__post_event(self.handle, data, len(data))


class _UpdateListener:
    """Runtime update listener that forwards each update event to the handle's C update listener."""

    __slots__ = ("handle",)

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __call__(self, event: dict) -> None:
        data = msgpack.packb(event, use_bin_type=True, default=_plain)
        _lib.edgevm__post_update_event(self.handle, data, len(data))


def pack_event(event: dict) -> bytes:
    """A listener event as a msgpack map; ``result`` (the task's msgpack bytes) is embedded as the
    value it encodes, not as a binary string, so the host decodes once."""
    items = dict(event)
    raw = items.pop("result", None)
    packer = msgpack.Packer(use_bin_type=True, default=_plain)
    out = bytearray(packer.pack_map_header(len(items) + 1))
    for key, value in items.items():
        out += packer.pack(key)
        out += packer.pack(value)
    out += packer.pack("result")
    out += bytes(raw) if isinstance(raw, (bytes, bytearray, memoryview)) and len(raw) else packer.pack(None)
    return bytes(out)


# -- the dispatcher ------------------------------------------------------------------------------------

class _Reply:
    """The completion callback of one job: finishes it in C exactly once (``list.pop`` is atomic)."""

    __slots__ = ("box",)

    def __init__(self, job: Any) -> None:
        self.box = [job]

    def __call__(self, status: int, data: Any) -> None:
        try:
            job = self.box.pop()
        except IndexError:
            return
        try:
            code = int(status)
        except Exception:  # noqa: BLE001
            code = Internal.code
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes):
            code, data = Internal.code, f"edgevm: the runtime answered with {type(data).__name__}".encode()
        if code != OK and not data:
            data = f"edgevm: the call failed with code {code}".encode()
        _lib.edgevm__finish_job(job, code, data, len(data))


def _dispatch_loop() -> None:
    take = _lib.edgevm__take_job
    null = _ffi.NULL
    while True:
        job = take()
        if job == null:
            return
        reply = _Reply(job)
        try:
            _dispatch(job, reply)
        except EdgeError as exc:
            reply(exc.code, _message(exc))
        except BaseException as exc:  # noqa: BLE001 - the dispatcher must survive anything
            reply(Internal.code, f"edgevm: internal error in the dispatcher: {_message(exc)}")


def _dispatch(job: Any, reply: _Reply) -> None:
    rt = _runtimes.get(job.handle)
    if rt is None:
        reply(Closed.code, "the handle was closed before the call ran")
        return
    remaining = job.remaining_ms
    try:
        system = _ffi.string(job.system).decode("utf-8")
        business = _ffi.string(job.business).decode("utf-8")
    except UnicodeDecodeError:
        reply(BadInput.code, "system and business codes must be UTF-8")
        return
    if remaining <= 0:
        reply(Timeout.code, f"{system}/{business} waited in the queue past its deadline")
        return
    payload = _ffi.buffer(job.data, job.len)[:]
    rt.infer_async(system, business, payload, reply, priority=job.priority, deadline_ms=remaining)

