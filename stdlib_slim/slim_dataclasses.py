"""``dataclasses`` for scripts. ``dataclass`` generates methods from source text built with the
field names, and ``__match_args__`` from them, so field names must be plain identifiers that obey
the attribute rules (a crafted name would otherwise be code, or an attribute a class pattern
reads). ``make_dataclass`` (arbitrary class namespaces) is left out."""
from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any

from stdlib_slim.names import check_field_names

_PLAIN = ("field", "fields", "asdict", "astuple", "replace", "is_dataclass", "FrozenInstanceError",
          "InitVar", "KW_ONLY", "MISSING")
_visible = threading.Lock()


def build(env: Any) -> dict[str, Any]:
    def dataclass(cls: Any = None, /, **kwargs: Any) -> Any:
        """``dataclasses.dataclass``, refusing field names that are not plain identifiers."""

        def wrap(c: Any) -> Any:
            check_field_names(list(c.__dict__.get("__annotations__", {})), "dataclass")
            # With string annotations (``from __future__ import annotations``) dataclasses looks the
            # class's module up in sys.modules; a bundle's modules live in its sandbox, so show it
            # there for the duration of the call (unless the name is taken by a real module).
            module = env.bundle_module(c.__module__)
            with _visible:
                shown = module is not None and c.__module__ not in sys.modules
                if shown:
                    sys.modules[c.__module__] = module
                try:
                    return dataclasses.dataclass(c, **kwargs)
                finally:
                    if shown:
                        del sys.modules[c.__module__]

        return wrap if cls is None else wrap(cls)

    members = {name: getattr(dataclasses, name) for name in _PLAIN if hasattr(dataclasses, name)}
    members["dataclass"] = dataclass
    return members
