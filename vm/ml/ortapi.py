"""ONNX Runtime through its C API: the device's inference binding.

The onnxruntime package ships ``capi/libonnxruntime.so*``, the C API library its Python binding
never loads. Calling it through cffi (``vm.ml._ort``, ``native/ort/``) starts faster than importing
the Python package (no pybind11 module, no Python-side package import; measured in
docs/shipping.md) and needs only that one library on a device. Nothing here imports
``onnxruntime``: the library is found through the package's location on ``sys.path``.

The wheel ships no C header, so ``native/ort/ort.h`` declares only the members of ``OrtApi`` that
are called, and ``_MEMBERS`` gives each its index in that struct. ``OrtApi`` only ever grows at
its end: these indices are the same in every onnxruntime_c_api.h from API version 14 to 29 (the
last one read), and the library is asked for ``ORT_API_VERSION``, the one ``pyproject.toml``'s
``onnxruntime>=1.17`` promises; an older library is refused with ``IncompatibleError``.

Ownership is explicit: every ``Ort*`` object this module creates is released, by ``ffi.gc`` for
the objects that outlive a call (sessions, run options) and in ``finally`` for the rest. Every
``OrtStatus`` becomes an ``OrtError`` carrying ORT's code and message; ``vm.ml.models`` turns it
into the project's typed errors.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vm.errors import IncompatibleError
from vm.ml._ort import ffi, lib
from vm.ml.profile import _EXEC_MODES, _OPT_LEVELS, _SPIN_ENTRIES, DeviceProfile

__all__ = ["ORT_API_VERSION", "OrtError", "Session", "RunOptions", "available_providers", "library_path",
           "load", "version"]

ORT_API_VERSION = 17

# OrtApi member -> (index in the struct, its type in native/ort/ort.h).
_MEMBERS: dict[str, tuple[int, str]] = {
    "GetErrorCode": (1, "ort_GetErrorCode"),
    "GetErrorMessage": (2, "ort_GetErrorMessage"),
    "CreateEnv": (3, "ort_CreateEnv"),
    "CreateSessionFromArray": (8, "ort_CreateSessionFromArray"),
    "Run": (9, "ort_Run"),
    "CreateSessionOptions": (10, "ort_CreateSessionOptions"),
    "SetSessionExecutionMode": (13, "ort_SetSessionExecutionMode"),
    "DisableProfiling": (15, "ort_SessionOptionsOnly"),
    "EnableMemPattern": (16, "ort_SessionOptionsOnly"),
    "DisableMemPattern": (17, "ort_SessionOptionsOnly"),
    "EnableCpuMemArena": (18, "ort_SessionOptionsOnly"),
    "DisableCpuMemArena": (19, "ort_SessionOptionsOnly"),
    "SetSessionLogSeverityLevel": (22, "ort_SessionOptionsInt"),
    "SetSessionGraphOptimizationLevel": (23, "ort_SetSessionGraphOptimizationLevel"),
    "SetIntraOpNumThreads": (24, "ort_SessionOptionsInt"),
    "SetInterOpNumThreads": (25, "ort_SessionOptionsInt"),
    "SessionGetInputCount": (30, "ort_SessionGetCount"),
    "SessionGetOutputCount": (31, "ort_SessionGetCount"),
    "SessionGetInputTypeInfo": (33, "ort_SessionGetTypeInfo"),
    "SessionGetOutputTypeInfo": (34, "ort_SessionGetTypeInfo"),
    "SessionGetInputName": (36, "ort_SessionGetName"),
    "SessionGetOutputName": (37, "ort_SessionGetName"),
    "CreateRunOptions": (39, "ort_CreateRunOptions"),
    "RunOptionsSetRunLogSeverityLevel": (41, "ort_RunOptionsSetRunLogSeverityLevel"),
    "RunOptionsSetTerminate": (46, "ort_RunOptionsSetTerminate"),
    "CreateTensorAsOrtValue": (48, "ort_CreateTensorAsOrtValue"),
    "CreateTensorWithDataAsOrtValue": (49, "ort_CreateTensorWithDataAsOrtValue"),
    "IsTensor": (50, "ort_IsTensor"),
    "GetTensorMutableData": (51, "ort_GetTensorMutableData"),
    "FillStringTensor": (52, "ort_FillStringTensor"),
    "GetStringTensorDataLength": (53, "ort_GetStringTensorDataLength"),
    "GetStringTensorContent": (54, "ort_GetStringTensorContent"),
    "CastTypeInfoToTensorInfo": (55, "ort_CastTypeInfoToTensorInfo"),
    "GetOnnxTypeFromTypeInfo": (56, "ort_GetOnnxTypeFromTypeInfo"),
    "GetTensorElementType": (60, "ort_GetTensorElementType"),
    "GetDimensionsCount": (61, "ort_GetDimensionsCount"),
    "GetDimensions": (62, "ort_GetDimensions"),
    "GetSymbolicDimensions": (63, "ort_GetSymbolicDimensions"),
    "GetTensorTypeAndShape": (65, "ort_GetTensorTypeAndShape"),
    "CreateCpuMemoryInfo": (69, "ort_CreateCpuMemoryInfo"),
    "AllocatorFree": (76, "ort_AllocatorFree"),
    "GetAllocatorWithDefaultOptions": (78, "ort_GetAllocatorWithDefaultOptions"),
    "ReleaseEnv": (92, "ort_Release"),
    "ReleaseStatus": (93, "ort_Release"),
    "ReleaseMemoryInfo": (94, "ort_Release"),
    "ReleaseSession": (95, "ort_Release"),
    "ReleaseValue": (96, "ort_Release"),
    "ReleaseRunOptions": (97, "ort_Release"),
    "ReleaseTypeInfo": (98, "ort_Release"),
    "ReleaseTensorTypeAndShapeInfo": (99, "ort_Release"),
    "ReleaseSessionOptions": (100, "ort_Release"),
    "AddFreeDimensionOverrideByName": (124, "ort_AddFreeDimensionOverrideByName"),
    "GetAvailableProviders": (125, "ort_GetAvailableProviders"),
    "ReleaseAvailableProviders": (126, "ort_ReleaseAvailableProviders"),
    "AddSessionConfigEntry": (130, "ort_AddSessionConfigEntry"),
    "SessionOptionsAppendExecutionProvider": (216, "ort_SessionOptionsAppendExecutionProvider"),
}

# ONNXTensorElementDataType -> (ONNX type name, numpy dtype; None: no numpy equivalent).
_ELEMENT_TYPES: dict[int, tuple[str, np.dtype | None]] = {
    1: ("float", np.dtype(np.float32)), 2: ("uint8", np.dtype(np.uint8)), 3: ("int8", np.dtype(np.int8)),
    4: ("uint16", np.dtype(np.uint16)), 5: ("int16", np.dtype(np.int16)), 6: ("int32", np.dtype(np.int32)),
    7: ("int64", np.dtype(np.int64)), 8: ("string", np.dtype(object)), 9: ("bool", np.dtype(np.bool_)),
    10: ("float16", np.dtype(np.float16)), 11: ("double", np.dtype(np.float64)),
    12: ("uint32", np.dtype(np.uint32)), 13: ("uint64", np.dtype(np.uint64)),
    14: ("complex64", np.dtype(np.complex64)), 15: ("complex128", np.dtype(np.complex128)),
    16: ("bfloat16", None),
}
_STRING = 8
_NUMPY_TO_ELEMENT = {dt: code for code, (_, dt) in _ELEMENT_TYPES.items() if dt is not None and code != _STRING}
# ONNXType (GetOnnxTypeFromTypeInfo): what a non-tensor input or output is called in messages.
_ONNX_TYPES = {0: "unknown", 1: "tensor", 2: "sequence", 3: "map", 4: "opaque", 5: "sparse tensor", 6: "optional"}
_TENSOR = 1
# Execution providers as the Python package names them -> as SessionOptionsAppendExecutionProvider does.
_PROVIDER_NAMES = {"XnnpackExecutionProvider": "XNNPACK", "QNNExecutionProvider": "QNN",
                   "SNPEExecutionProvider": "SNPE", "OpenVINOExecutionProvider": "OpenVINO",
                   "AzureExecutionProvider": "AZURE", "CoreMLExecutionProvider": "CoreML",
                   "VitisAIExecutionProvider": "VitisAI", "WebGpuExecutionProvider": "WebGPU"}
_LOG_WARNING = 2
_MSG_MAX = 4096


class OrtError(Exception):
    """A failed ONNX Runtime call: ``code`` is ORT's OrtErrorCode, the message is ORT's."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Api:
    """The loaded library: its OrtApi members as callables, the process's one OrtEnv, the CPU
    memory description inputs are wrapped with, and the default allocator (owned by ORT)."""

    def __init__(self, path: str, api_version: int) -> None:
        err = ffi.new("char[]", _MSG_MAX)
        base = lib.edgevm_ort_open(os.fsencode(path), err, _MSG_MAX)
        if base == ffi.NULL:
            raise IncompatibleError(f"cannot load ONNX Runtime from {path}: {ffi.string(err).decode(errors='replace')}")
        self.version = ffi.string(base.GetVersionString()).decode()
        table = base.GetApi(api_version)
        if table == ffi.NULL:
            raise IncompatibleError(f"ONNX Runtime {self.version} ({path}) does not offer C API version "
                                    f"{api_version}, which this runtime needs (onnxruntime>=1.{api_version})")
        self.path = path
        for name, (index, ctype) in _MEMBERS.items():
            setattr(self, name, ffi.cast(ctype, table[index]))
        env = ffi.new("OrtEnv **")
        self.check(self.CreateEnv(_LOG_WARNING, b"edgevm", env))
        self.env = ffi.gc(env[0], self.ReleaseEnv)
        info = ffi.new("OrtMemoryInfo **")
        self.check(self.CreateCpuMemoryInfo(0, 0, info))  # OrtDeviceAllocator, OrtMemTypeDefault
        self.cpu = ffi.gc(info[0], self.ReleaseMemoryInfo)
        alloc = ffi.new("OrtAllocator **")
        self.check(self.GetAllocatorWithDefaultOptions(alloc))
        self.allocator = alloc[0]

    def check(self, status: Any) -> None:
        """Raise ``OrtError`` for a non-NULL OrtStatus (which is released)."""
        if status == ffi.NULL:
            return
        try:
            code = self.GetErrorCode(status)
            message = ffi.string(self.GetErrorMessage(status)).decode("utf-8", "replace")
        finally:
            self.ReleaseStatus(status)
        raise OrtError(code, " ".join(message.split()) or f"ONNX Runtime error {code}")

    def take_string(self, ptr: Any) -> str:
        """A string ORT allocated with the default allocator, freed once read."""
        try:
            return ffi.string(ptr).decode("utf-8", "replace")
        finally:
            self.check(self.AllocatorFree(self.allocator, ptr))


_lock = threading.Lock()
_loaded: _Api | None = None


def library_path() -> str:
    """The C API library of the installed onnxruntime package (``capi/libonnxruntime.so*``), found
    without importing the package; ``IncompatibleError`` when there is none."""
    spec = importlib.util.find_spec("onnxruntime")
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    found = sorted(p for d in dirs for p in glob.glob(os.path.join(d, "capi", "libonnxruntime.so*")))
    if not found:
        raise IncompatibleError("this device has no ONNX Runtime library (onnxruntime/capi/libonnxruntime.so), "
                                "which bundles with models need")
    return found[-1]


def load(path: str | None = None, api_version: int = ORT_API_VERSION) -> _Api:
    """The library, loaded once per process (``path``: default ``library_path()``): the zygote
    calls it before it forks, so that workers inherit the loaded library and its environment."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _Api(path or library_path(), api_version)
        return _loaded


def version() -> str:
    """The loaded library's version string (``1.32.0``)."""
    return load().version


def available_providers() -> list[str]:
    """The execution providers this ONNX Runtime build has, by the Python package's names."""
    api = load()
    names, count = ffi.new("char ***"), ffi.new("int *")
    api.check(api.GetAvailableProviders(names, count))
    try:
        return [ffi.string(names[0][i]).decode() for i in range(count[0])]
    finally:
        api.check(api.ReleaseAvailableProviders(names[0], count[0]))


class TensorInfo:
    """An input or output as the session reports it: name, ONNX type string (``tensor(float)``),
    shape (ints fixed, names symbolic, None unknown; None for a non-tensor)."""

    __slots__ = ("name", "type", "shape")

    def __init__(self, name: str, type_: str, shape: tuple[int | str | None, ...] | None) -> None:
        self.name, self.type, self.shape = name, type_, shape


def _tensor_info(api: _Api, name: str, type_info: Any) -> TensorInfo:
    kind = ffi.new("int *")
    api.check(api.GetOnnxTypeFromTypeInfo(type_info, kind))
    if kind[0] != _TENSOR:
        return TensorInfo(name, _ONNX_TYPES.get(kind[0], "unknown"), None)
    info = ffi.new("const OrtTensorTypeAndShapeInfo **")
    api.check(api.CastTypeInfoToTensorInfo(type_info, info))  # owned by type_info
    elem, rank = ffi.new("int *"), ffi.new("size_t *")
    api.check(api.GetTensorElementType(info[0], elem))
    api.check(api.GetDimensionsCount(info[0], rank))
    dims, syms = ffi.new("int64_t[]", rank[0]), ffi.new("const char *[]", rank[0])
    api.check(api.GetDimensions(info[0], dims, rank[0]))
    api.check(api.GetSymbolicDimensions(info[0], syms, rank[0]))
    shape: list[int | str | None] = []
    for i in range(rank[0]):
        sym = ffi.string(syms[i]).decode("utf-8", "replace") if syms[i] != ffi.NULL else ""
        shape.append(int(dims[i]) if dims[i] >= 0 else (sym or None))
    type_name = _ELEMENT_TYPES.get(elem[0], (f"element type {elem[0]}", None))[0]
    return TensorInfo(name, f"tensor({type_name})", tuple(shape))


class RunOptions:
    """One run's OrtRunOptions: ``terminate()`` (from any thread, e.g. the watchdog's) stops the run
    it belongs to; ``terminated`` says whether it was asked to."""

    __slots__ = ("_api", "ptr", "terminated")

    def __init__(self, api: _Api, log_severity: int) -> None:
        out = ffi.new("OrtRunOptions **")
        api.check(api.CreateRunOptions(out))
        self.ptr = ffi.gc(out[0], api.ReleaseRunOptions)
        self._api = api
        self.terminated = False
        api.check(api.RunOptionsSetRunLogSeverityLevel(self.ptr, log_severity))

    def terminate(self) -> None:
        """Ask ORT to stop the run (this object stays alive as long as a caller holds it)."""
        self.terminated = True
        self._api.check(self._api.RunOptionsSetTerminate(self.ptr))


class Session:
    """An OrtSession created from model bytes with the settings of a ``DeviceProfile``.

    ``run`` is safe from several threads at once (ORT sessions are; this object holds no mutable
    state after construction). Inputs reach ORT without copies when they are C-contiguous and
    aligned; each output is copied once into an array numpy allocates (so the call's memory budget
    counts it and a script holds a plain array) and ORT's value is released before ``run`` returns.
    """

    def __init__(self, model_bytes: bytes | bytearray | memoryview, profile: DeviceProfile) -> None:
        api = load()
        self._api = api
        options = ffi.new("OrtSessionOptions **")
        api.check(api.CreateSessionOptions(options))
        try:
            _apply(api, options[0], profile)
            data = ffi.from_buffer(model_bytes)
            out = ffi.new("OrtSession **")
            api.check(api.CreateSessionFromArray(api.env, data, len(data), options[0], out))
        finally:
            api.ReleaseSessionOptions(options[0])
        self._ptr = ffi.gc(out[0], api.ReleaseSession)
        self.inputs = self._infos(api.SessionGetInputCount, api.SessionGetInputName, api.SessionGetInputTypeInfo)
        self.outputs = self._infos(api.SessionGetOutputCount, api.SessionGetOutputName,
                                   api.SessionGetOutputTypeInfo)
        other = [f"{i.name!r} ({i.type})" for i in (*self.inputs, *self.outputs) if not i.type.startswith("tensor(")]
        if other:
            raise OrtError(9, f"inputs and outputs must be tensors for the device's ONNX Runtime binding; "
                              f"not: {', '.join(other)}")
        self.providers = _providers(profile)[0]
        self._names = {i.name: ffi.new("char[]", i.name.encode()) for i in (*self.inputs, *self.outputs)}

    def _infos(self, count_fn: Callable, name_fn: Callable, type_fn: Callable) -> tuple[TensorInfo, ...]:
        api = self._api
        count = ffi.new("size_t *")
        api.check(count_fn(self._ptr, count))
        infos = []
        for i in range(count[0]):
            name = ffi.new("char **")
            api.check(name_fn(self._ptr, i, api.allocator, name))
            text = api.take_string(name[0])
            type_info = ffi.new("OrtTypeInfo **")
            api.check(type_fn(self._ptr, i, type_info))
            try:
                infos.append(_tensor_info(api, text, type_info[0]))
            finally:
                api.ReleaseTypeInfo(type_info[0])
        return tuple(infos)

    def run_options(self, log_severity: int = 4) -> RunOptions:
        """Fresh run options (default: ORT logs nothing about the run; errors are raised)."""
        return RunOptions(self._api, log_severity)

    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray], options: RunOptions) -> list[np.ndarray]:
        """Run on ``feeds`` (input name -> array, names and dtypes already checked by the caller);
        return the outputs named, in order. ``OrtError`` if ORT refuses or fails."""
        api = self._api
        keep: list[Any] = []  # buffers ORT reads during the run
        values = ffi.new("OrtValue *[]", len(feeds))
        outputs = ffi.new("OrtValue *[]", len(output_names))
        try:
            for i, (name, array) in enumerate(feeds.items()):
                values[i] = self._value(name, array, keep)
            in_names = ffi.new("const char *[]", [self._names[n] for n in feeds])
            out_names = ffi.new("const char *[]", [self._names[n] for n in output_names])
            api.check(api.Run(self._ptr, options.ptr, in_names, values, len(feeds), out_names,
                              len(output_names), outputs))
            return [_to_numpy(api, outputs[i]) for i in range(len(output_names))]
        finally:
            for arr in (values, outputs):
                for i in range(len(arr)):
                    if arr[i] != ffi.NULL:
                        api.ReleaseValue(arr[i])

    def _value(self, name: str, array: np.ndarray, keep: list[Any]) -> Any:
        api = self._api
        shape = ffi.new("int64_t[]", array.shape)
        out = ffi.new("OrtValue **")
        if array.dtype.kind in "UO":
            api.check(api.CreateTensorAsOrtValue(api.allocator, shape, array.ndim, _STRING, out))
            try:
                texts = [ffi.new("char[]", str(s).encode("utf-8")) for s in array.reshape(-1)]
                api.check(api.FillStringTensor(out[0], ffi.new("const char *[]", texts), len(texts)))
            except BaseException:
                api.ReleaseValue(out[0])
                raise
            return out[0]
        elem = _NUMPY_TO_ELEMENT.get(array.dtype)
        if elem is None:
            raise OrtError(2, f"input {name!r}: ONNX Runtime takes no tensors of dtype {array.dtype}")
        array = np.require(array, requirements=("C", "A"))  # a copy only if not contiguous or aligned
        buf = ffi.from_buffer(array) if array.nbytes else ffi.new("char[1]")
        keep.append((array, buf))
        api.check(api.CreateTensorWithDataAsOrtValue(api.cpu, buf, array.nbytes, shape, array.ndim, elem, out))
        return out[0]


def _to_numpy(api: _Api, value: Any) -> np.ndarray:
    """Copy one output OrtValue into a numpy array."""
    is_tensor = ffi.new("int *")
    api.check(api.IsTensor(value, is_tensor))
    if not is_tensor[0]:
        raise OrtError(9, "the model returned a non-tensor output (sequence or map), which the device's "
                          "ONNX Runtime binding does not pass to scripts")
    info = ffi.new("OrtTensorTypeAndShapeInfo **")
    api.check(api.GetTensorTypeAndShape(value, info))
    try:
        elem, rank = ffi.new("int *"), ffi.new("size_t *")
        api.check(api.GetTensorElementType(info[0], elem))
        api.check(api.GetDimensionsCount(info[0], rank))
        dims = ffi.new("int64_t[]", rank[0])
        api.check(api.GetDimensions(info[0], dims, rank[0]))
    finally:
        api.ReleaseTensorTypeAndShapeInfo(info[0])
    shape = tuple(int(d) for d in dims)
    count = int(np.prod(shape, dtype=np.int64))
    if elem[0] == _STRING:
        return _strings(api, value, shape, count)
    dtype = _ELEMENT_TYPES.get(elem[0], ("", None))[1]
    if dtype is None:
        raise OrtError(9, f"the model returned a tensor of element type {elem[0]}, which has no numpy dtype")
    out = np.empty(shape, dtype)
    if out.nbytes:
        data = ffi.new("void **")
        api.check(api.GetTensorMutableData(value, data))
        ffi.memmove(ffi.from_buffer(out), data[0], out.nbytes)
    return out


def _strings(api: _Api, value: Any, shape: tuple[int, ...], count: int) -> np.ndarray:
    total = ffi.new("size_t *")
    api.check(api.GetStringTensorDataLength(value, total))
    buf = ffi.new("char[]", max(total[0], 1))
    offsets = ffi.new("size_t[]", max(count, 1))
    api.check(api.GetStringTensorContent(value, buf, total[0], offsets, count))
    raw = ffi.buffer(buf, total[0])[:]
    ends = [offsets[i] for i in range(1, count)] + [total[0]]
    out = np.empty(count, dtype=object)
    for i in range(count):
        out[i] = raw[offsets[i]:ends[i]].decode("utf-8", "replace")
    return out.reshape(shape)


def _providers(profile: DeviceProfile) -> tuple[list[str], list[dict[str, str]]]:
    return profile.providers(available_providers())


def _apply(api: _Api, so: Any, profile: DeviceProfile) -> None:
    """The ``DeviceProfile``'s settings on session options (what ``DeviceProfile.session_options``
    sets on the Python package's)."""
    check = api.check
    check(api.SetIntraOpNumThreads(so, profile.intra_op_threads))
    check(api.SetInterOpNumThreads(so, profile.inter_op_threads))
    check(api.SetSessionGraphOptimizationLevel(so, getattr(lib, _OPT_LEVELS[profile.graph_optimization])))
    check(api.SetSessionExecutionMode(so, getattr(lib, _EXEC_MODES[profile.execution_mode])))
    check((api.EnableCpuMemArena if profile.cpu_mem_arena else api.DisableCpuMemArena)(so))
    check((api.EnableMemPattern if profile.mem_pattern else api.DisableMemPattern)(so))
    check(api.SetSessionLogSeverityLevel(so, profile.log_severity))
    check(api.DisableProfiling(so))  # profiling writes files; never on device
    spin = b"1" if profile.allow_spinning else b"0"
    for key in _SPIN_ENTRIES:
        check(api.AddSessionConfigEntry(so, key.encode(), spin))
    for dim, size in profile.free_dim_overrides:
        check(api.AddFreeDimensionOverrideByName(so, dim.encode(), size))
    names, options = _providers(profile)
    for name, opts in zip(names[:-1], options[:-1], strict=True):  # the last one is CPU, always there
        c_name = _PROVIDER_NAMES.get(name)
        if c_name is None:
            raise OrtError(9, f"execution provider {name} cannot be added through ONNX Runtime's C API")
        keys = [ffi.new("char[]", k.encode()) for k in opts]
        vals = [ffi.new("char[]", v.encode()) for v in opts.values()]
        check(api.SessionOptionsAppendExecutionProvider(so, c_name.encode(), ffi.new("const char *[]", keys),
                                                         ffi.new("const char *[]", vals), len(keys)))
    if options[-1]:
        raise OrtError(2, f"CPUExecutionProvider options {sorted(options[-1])} are not settable through ONNX "
                          f"Runtime's C API; use the device profile's keys (cpu_mem_arena)")
