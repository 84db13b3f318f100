"""One trusted bundle made runnable in this process: its sandbox, its model sessions, its entries.

What runs a bundle holds one ``BundleInstance``: the runtime in thread mode, each worker process in
process mode (``vm.isolation``). Every method runs script code and must be called under a guard
(the watchdog's deadline and the memory budget: ``vm.execution.executor``); inputs and results
cross as msgpack bytes, so both modes see the same values and errors.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from vm import wire
from vm.bundle.loader import TrustedBundle
from vm.errors import NotFound, ResourceExhausted, ScriptError
from vm.sandbox import edge
from vm.sandbox.report import call_script
from vm.sandbox.sandbox import Sandbox, prepare_thread


class BundleInstance:
    """A bundle's scripts and models, ready to call. ``sessions`` are its model sessions
    (``vm.ml.models.load_models``), created by the caller where it pleases (in a worker process:
    before the lockdown). ``features`` returns the current feature snapshots (name -> snapshot);
    each call reads the view it returned when the call started."""

    def __init__(self, bundle: TrustedBundle, sessions: dict[str, Any], log: Callable[[str], None], *,
                 max_result: int, events: edge.EventsBackend | None = None,
                 features: Callable[[], Mapping[str, Any]] = lambda: _NONE, ab_group: str | None = None) -> None:
        self.bundle = bundle
        self.sessions = sessions
        self.max_result = max_result
        self.features = features
        self.sandbox = Sandbox(
            bundle.codes, bundle.packages,
            edge=lambda: edge.build(bundle_name=bundle.name, bundle_version=bundle.version, sessions=sessions,
                                    log=log, events=events, snapshots=bundle.manifest.snapshots,
                                    ab_group=ab_group),
            log=log)
        self._entries: dict[str, Callable[..., Any]] = {}

    @property
    def resolved(self) -> list[str]:
        """The business codes whose entry functions are resolved."""
        return sorted(self._entries)

    def resolve(self, business: str) -> None:
        """Find the entry function of ``business``, executing its module (and what it imports)."""
        spec = self.bundle.manifest.entries.get(business)
        if spec is None:
            raise NotFound(f"bundle {self.bundle.name} has no entry {business!r}")
        prepare_thread()
        edge.pin(self.features())
        try:
            self._entries[business] = call_script(self.bundle.files, self.sandbox.entry, spec)
        finally:
            edge.pin(None)

    def invoke(self, business: str, payload: bytes) -> bytes:
        """Run the entry of ``business`` on msgpack ``payload``; the result as msgpack."""
        inputs = wire.decode(payload, what="the inputs")
        return self._call(business, inputs)

    def step(self, business: str, payload: bytes, features: Sequence[tuple[str, bytes]]) -> bytes:
        """An event-triggered step: the event's fields as inputs, plus ``inputs["features"]`` holding
        the results of the calc tasks it runs after or uses (name, msgpack result)."""
        inputs = wire.decode(payload, what="the event")
        if features:
            inputs["features"] = {name: wire.decode(data, what=f"the result of {name}") for name, data in features}
        return self._call(business, inputs)

    def warm(self) -> bytes:
        """PreloadTask: run every model once on zeros so that its first real run is fast."""
        import numpy as np

        warmed: list[str] = []
        skipped: dict[str, str] = {}
        for name, session in self.sessions.items():
            try:
                feeds = {}
                for spec in session.inputs:
                    dtype = spec.dtype
                    if dtype is None or dtype == np.dtype(object):
                        raise TypeError(f"input {spec.name!r} is not numeric")
                    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec.shape or ())
                    feeds[spec.name] = np.zeros(shape, dtype=dtype)
                session.run(feeds)
                warmed.append(name)
            except (TypeError, ValueError, RuntimeError) as exc:
                skipped[name] = str(exc)
        return wire.encode({"warmed": warmed, "skipped": skipped})

    def _call(self, business: str, inputs: Any) -> bytes:
        fn = self._entries.get(business)
        if fn is None:
            raise NotFound(f"bundle {self.bundle.name}: entry {business!r} is not resolved")
        prepare_thread()
        edge.pin(self.features())
        try:
            result = call_script(self.bundle.files, fn, inputs)
        finally:
            edge.pin(None)
        data = call_script(self.bundle.files, _encode_result, result)
        if len(data) > self.max_result:
            raise ResourceExhausted(f"the entry's result of {len(data)} bytes exceeds the limit of {self.max_result}")
        return data


_NONE: Mapping[str, Any] = MappingProxyType({})


def _encode_result(result: Any) -> bytes:
    return wire.encode(result, what="the entry returned a value that", error=ScriptError)
