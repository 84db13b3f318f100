"""The device profile: how ONNX Runtime sessions are configured on a class of device (threads,
graph optimisation, execution providers, memory arenas). Pure configuration, validated from the
runtime config's ``device_profile``. The device applies it through ONNX Runtime's C API
(``vm.ml.ortapi``); ``session_options`` builds the same settings for the onnxruntime Python package
(what server-side tools and the parity tests use), which it imports only then.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vm.errors import BadInput

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_EXEC_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
# Session config entries that take the profile's allow_spinning ("1"/"0").
_SPIN_ENTRIES = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")
_CPU = "CPUExecutionProvider"
_MAX_THREADS = 64


def _fail(message: str) -> BadInput:
    return BadInput(f"device_profile: {message}")


def _get_int(cfg: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{key} must be an integer, got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise _fail(f"{key} must be between {lo} and {hi}, got {value}")
    return value


def _get_bool(cfg: Mapping[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise _fail(f"{key} must be true or false, got {type(value).__name__} {value!r}")
    return value


def _get_choice(cfg: Mapping[str, Any], key: str, default: str, choices: Sequence[str]) -> str:
    value = cfg.get(key, default)
    if not isinstance(value, str) or value not in choices:
        raise _fail(f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _get_providers(cfg: Mapping[str, Any]) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    raw = cfg.get("execution_providers", [_CPU])
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence) or not raw:
        raise _fail("execution_providers must be a non-empty list of provider names, "
                    f"e.g. ['XnnpackExecutionProvider', '{_CPU}'], got {raw!r}")
    out: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for i, entry in enumerate(raw):
        options: Mapping[str, Any] = {}
        if isinstance(entry, Mapping):
            extra = set(entry) - {"name", "options"}
            if extra:
                raise _fail(f"execution_providers[{i}] has unknown keys {sorted(extra)}; "
                            "allowed: 'name', 'options'")
            name, options = entry.get("name"), entry.get("options", {})
            if not isinstance(options, Mapping):
                raise _fail(f"execution_providers[{i}].options must be a mapping, got {options!r}")
        else:
            name = entry
        if not isinstance(name, str) or not name.endswith("ExecutionProvider"):
            raise _fail(f"execution_providers[{i}] must name a provider such as '{_CPU}', got {name!r}")
        for k, v in options.items():
            if not isinstance(k, str) or isinstance(v, Mapping | list | tuple) or v is None:
                raise _fail(f"execution_providers[{i}].options must map names to scalars, got {k!r}: {v!r}")
        opts = tuple(sorted((k, str(v).lower() if isinstance(v, bool) else str(v))
                            for k, v in options.items()))
        if all(n != name for n, _ in out):
            out.append((name, opts))
    return tuple(out)


@dataclass(frozen=True)
class DeviceProfile:
    """How ONNX Runtime sessions are configured on this device class.

    The defaults suit a phone-class CPU where the runtime already parallelises across calls:
    one intra-op thread (so ORT creates no thread pool of its own), no busy-waiting spin threads,
    no CPU memory arena (memory goes back to the allocator between calls instead of staying
    reserved), full graph optimisation, CPU execution only.
    """

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    # (provider name, sorted (option, value) pairs), in order of preference.
    execution_providers: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ((_CPU, ()),)
    allow_spinning: bool = False
    cpu_mem_arena: bool = False
    mem_pattern: bool = True
    log_severity: int = 3
    free_dim_overrides: tuple[tuple[str, int], ...] = field(default=())

    KEYS = ("intra_op_threads", "inter_op_threads", "graph_optimization", "execution_mode",
            "execution_providers", "allow_spinning", "cpu_mem_arena", "mem_pattern", "log_severity",
            "free_dim_overrides")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> DeviceProfile:
        """Build from the runtime config's ``"device_profile"`` mapping (None: defaults).

        Keys: ``intra_op_threads`` / ``inter_op_threads`` (0 = ORT picks), ``graph_optimization``
        (``disable|basic|extended|all``), ``execution_mode`` (``sequential|parallel``),
        ``execution_providers`` (names, or ``{"name", "options"}`` mappings, in order of
        preference), ``allow_spinning``, ``cpu_mem_arena``, ``mem_pattern``, ``log_severity``
        (0 verbose .. 4 fatal), ``free_dim_overrides`` (symbolic dim name -> fixed size).
        Raises ``BadInput`` naming the offending key.
        """
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise _fail(f"must be a mapping, got {type(config).__name__}")
        unknown = sorted(str(k) for k in config if k not in cls.KEYS)
        if unknown:
            raise _fail(f"unknown key(s) {unknown}; allowed: {list(cls.KEYS)}")
        overrides = config.get("free_dim_overrides", {})
        if not isinstance(overrides, Mapping):
            raise _fail(f"free_dim_overrides must map dimension names to sizes, got {overrides!r}")
        dims: list[tuple[str, int]] = []
        for k in sorted(overrides, key=str):
            if not isinstance(k, str) or not k:
                raise _fail(f"free_dim_overrides keys must be dimension names, got {k!r}")
            dims.append((k, _get_int(overrides, k, 0, 1, 1 << 31)))
        return cls(
            intra_op_threads=_get_int(config, "intra_op_threads", 1, 0, _MAX_THREADS),
            inter_op_threads=_get_int(config, "inter_op_threads", 1, 0, _MAX_THREADS),
            graph_optimization=_get_choice(config, "graph_optimization", "all", tuple(_OPT_LEVELS)),
            execution_mode=_get_choice(config, "execution_mode", "sequential", tuple(_EXEC_MODES)),
            execution_providers=_get_providers(config),
            allow_spinning=_get_bool(config, "allow_spinning", False),
            cpu_mem_arena=_get_bool(config, "cpu_mem_arena", False),
            mem_pattern=_get_bool(config, "mem_pattern", True),
            log_severity=_get_int(config, "log_severity", 3, 0, 4),
            free_dim_overrides=tuple(dims),
        )

    def to_config(self) -> dict[str, Any]:
        """The profile as a plain (msgpack-able) mapping that ``from_config`` accepts."""
        return {
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
            "graph_optimization": self.graph_optimization,
            "execution_mode": self.execution_mode,
            "execution_providers": [{"name": n, "options": dict(o)} if o else n
                                    for n, o in self.execution_providers],
            "allow_spinning": self.allow_spinning,
            "cpu_mem_arena": self.cpu_mem_arena,
            "mem_pattern": self.mem_pattern,
            "log_severity": self.log_severity,
            "free_dim_overrides": dict(self.free_dim_overrides),
        }

    def providers(self, available: Sequence[str] | None = None) -> tuple[list[str], list[dict[str, str]]]:
        """Provider names and options this ORT build has (``available``; default: the Python
        package's list), in preference order, ending with CPU."""
        if available is None:
            import onnxruntime as ort

            available = ort.get_available_providers()
        available = set(available)
        names: list[str] = []
        options: list[dict[str, str]] = []
        for name, opts in self.execution_providers:
            if name in available and name != _CPU:
                names.append(name)
                options.append(dict(opts))
        cpu_opts = next((dict(o) for n, o in self.execution_providers if n == _CPU), {})
        names.append(_CPU)
        options.append(cpu_opts)
        return names, options

    def session_options(self) -> Any:
        """A fresh ``onnxruntime.SessionOptions`` for this profile."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = self.inter_op_threads
        level = _OPT_LEVELS[self.graph_optimization]
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        so.execution_mode = getattr(ort.ExecutionMode, _EXEC_MODES[self.execution_mode])
        so.enable_cpu_mem_arena = self.cpu_mem_arena
        so.enable_mem_pattern = self.mem_pattern
        so.log_severity_level = self.log_severity
        so.enable_profiling = False  # profiling writes files; never on device
        spin = "1" if self.allow_spinning else "0"
        for entry in _SPIN_ENTRIES:
            so.add_session_config_entry(entry, spin)
        for dim, size in self.free_dim_overrides:
            so.add_free_dimension_override_by_name(dim, size)
        return so
