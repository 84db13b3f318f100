"""Typed errors with stable codes.

Every failure the runtime reports is an ``EdgeError`` subclass. ``code`` is the stable integer
that the C API returns (``EDGEVM_E*`` in ``native/capi/edgevm.h``), ``name`` the stable string the CLI
and logs print. Messages are for humans and never contain key material.

This module is the table of codes: ``edgevm.h``'s enum, ``edgevm_errcode_name`` (``native/capi/errors.c``)
and the table in ``docs/c-api.md`` are checked against ``ALL_ERRORS`` by
``tests/host/test_capi_contract.py``.
"""
from __future__ import annotations

OK = 0
"""The status of a call that succeeded (``EDGEVM_OK``, named ``"ok"``)."""


class EdgeError(Exception):
    """Base of every error edgevm reports."""

    code = 99
    name = "internal"

    def __init__(self, message: str, *, detail: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """``error[<name>/<code>]: <message>`` on a single line."""
        text = " ".join(self.message.split())
        return f"error[{self.name}/{self.code}]: {text}"


class BadInput(EdgeError):
    """Malformed input: not a bundle, lengths that lie, invalid msgpack, wrong types."""

    code, name = 1, "bad_input"


class SignatureError(EdgeError):
    """The bundle's signature does not verify against a pinned key."""

    code, name = 2, "signature"


class DecryptError(EdgeError):
    """A correctly signed bundle that this device cannot decrypt."""

    code, name = 3, "decrypt"


class IncompatibleError(EdgeError):
    """Format version, runtime version or bytecode magic the device does not support."""

    code, name = 4, "incompatible"


class PolicyError(EdgeError):
    """Code or a call that the sandbox policy refuses."""

    code, name = 5, "policy"


class ScriptError(EdgeError):
    """A script raised; ``detail`` holds file, line, type and message."""

    code, name = 6, "script"


class Timeout(EdgeError):
    """The call did not finish before its deadline."""

    code, name = 7, "timeout"


class NotFound(EdgeError):
    """Unknown system, business code, model, key id or file."""

    code, name = 8, "not_found"


class Busy(EdgeError):
    """The runtime refused new work (a full queue, no healthy worker)."""

    code, name = 9, "busy"


class Closed(EdgeError):
    """The runtime was closed."""

    code, name = 10, "closed"


class ResourceExhausted(EdgeError):
    """A script exceeded its memory budget or the recursion limit."""

    code, name = 11, "resource"


class Downgrade(EdgeError):
    """A bundle older than the one already loaded under the same name."""

    code, name = 12, "downgrade"


class CircuitOpen(EdgeError):
    """The entry's circuit breaker is open after repeated failures; the call failed fast."""

    code, name = 13, "circuit_open"


class Crashed(EdgeError):
    """The worker process running the call died (a signal, an exit, a resource limit) or sent
    something that is not a valid reply; it was replaced."""

    code, name = 14, "crashed"


class Internal(EdgeError):
    """A bug in edgevm itself; the message says where."""

    code, name = 99, "internal"


ALL_ERRORS: tuple[type[EdgeError], ...] = (
    BadInput,
    SignatureError,
    DecryptError,
    IncompatibleError,
    PolicyError,
    ScriptError,
    Timeout,
    NotFound,
    Busy,
    Closed,
    ResourceExhausted,
    Downgrade,
    CircuitOpen,
    Crashed,
    Internal,
)
