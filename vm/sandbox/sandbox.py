"""The world a bundle's scripts run in: vetted builtins (``vm.sandbox.builtins``), a guarded
``import``, and the bundle's own modules executed in fresh namespaces.

The bytecode verifier has already refused code that names what it must not; this module makes
sure the names a script *can* use lead nowhere else: ``import`` resolves only the bundle's modules,
``stdlib_slim`` and ``edge``, and every sandbox gets its own module objects so nothing a script does
to them reaches another bundle or the runtime.
"""
from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import stdlib_slim
from vm.errors import NotFound
from vm.guard import _guard, context
from vm.policy import rules
from vm.sandbox.builtins import (
    PolicyViolation,
    install_process_guards,
    make_builtins,
    register_class,
    register_module,
)


class Sandbox:
    """One loaded bundle's scripts: modules, builtins and import.

    ``codes`` maps module names (``features``, ``pkg``, ``pkg.util``) to verified code objects;
    ``packages`` names those that are packages; ``edge`` builds the bundle's ``edge`` module.
    Modules execute on first import; ``import_module`` is the way in for the runtime."""

    def __init__(self, codes: dict[str, types.CodeType], packages: frozenset[str],
                 edge: Callable[[], types.ModuleType], log: Callable[[str], None],
                 regex_default_s: float = 0.1) -> None:
        self._codes = codes
        self._packages = packages
        self._edge_factory = edge
        self._log = log
        self._regex_default_s = regex_default_s
        self._modules: dict[str, types.ModuleType] = {}
        self._slim: dict[str, types.ModuleType] = {}
        self.builtins = make_builtins(print_=self._print, import_=self._import)
        install_process_guards()

    # -- services for stdlib_slim wrappers -------------------------------------------------
    def regex_timeout_s(self) -> float:
        ctx = context.current()
        remaining = ctx.remaining() if ctx is not None else self._regex_default_s
        return max(remaining, 0.001)

    @staticmethod
    def violation(message: str) -> None:
        raise PolicyViolation(message)

    @staticmethod
    def own_class(cls: type) -> type:
        """Record a class that library code built for the bundle (``namedtuple``) as the bundle's own."""
        register_class(cls)
        return cls

    def bundle_module(self, name: str) -> types.ModuleType | None:
        """The bundle's module ``name`` if it has been executed."""
        return self._modules.get(name)

    def _print(self, *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
               **_: Any) -> None:
        """``print``: to the bundle's log, or to a ``file`` the script gave (an object with ``write``)."""
        sep = " " if sep is None else sep
        if file is not None:
            file.write(sep.join(str(a) for a in args) + ("\n" if end is None else end))
            return
        self._log(sep.join(str(a) for a in args))

    # -- import ------------------------------------------------------------------------------
    def import_module(self, name: str) -> types.ModuleType:
        """The bundle module ``name``, executing it (and what it imports) on first use."""
        module = self._modules.get(name)
        if module is not None:
            return module
        code = self._codes.get(name)
        if code is None:
            raise ModuleNotFoundError(f"no module named {name!r} in the bundle", name=name)
        parent, _, child = name.rpartition(".")
        parent_module = self.import_module(parent) if parent else None
        module = types.ModuleType(name)
        package = name if name in self._packages else name.rpartition(".")[0]
        module.__dict__.update({"__builtins__": self.builtins, "__package__": package})
        self._modules[name] = module
        register_module(module)
        try:
            exec(code, module.__dict__)
        except BaseException:
            del self._modules[name]
            raise
        if parent_module is not None:
            parent_module.__dict__[child] = module
        return module

    def _slim_module(self, name: str) -> types.ModuleType:
        module = self._slim.get(name)
        if module is None:
            module = self._edge_factory() if name == "edge" else stdlib_slim.build(name, self)
            self._slim[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                module_parent = self._slim_module(parent)
                module_parent.__dict__[child] = module
        return module

    def _resolve(self, name: str, package: str, level: int) -> str:
        if level == 0:
            return name
        bits = package.split(".") if package else []
        if level - 1 > len(bits) or not package:
            raise ImportError("attempted relative import beyond the bundle's top-level package")
        base = ".".join(bits[: len(bits) - (level - 1)])
        return f"{base}.{name}" if name else base

    def _import(self, name: str, globals: dict | None = None, locals: Any = None,
                fromlist: Any = (), level: int = 0) -> types.ModuleType:
        if type(fromlist) is list and level == 0:
            return _import_for_c(name)
        package = (globals or {}).get("__package__") or ""
        absolute = self._resolve(name, package, level)
        if absolute in self._codes:
            module = self.import_module(absolute)
            for item in fromlist or ():
                sub = f"{absolute}.{item}"
                if sub in self._codes:
                    self.import_module(sub)
            return module if fromlist else self.import_module(absolute.partition(".")[0])
        if absolute in rules.ALLOWED_IMPORTS:
            module = self._slim_module(absolute)
            for item in fromlist or ():
                sub = f"{absolute}.{item}"
                if sub in rules.ALLOWED_IMPORTS:
                    self._slim_module(sub)
            return module if fromlist else self._slim_module(absolute.partition(".")[0])
        raise PolicyViolation(f"import of {absolute!r} is not allowed in the sandbox")

    def entry(self, spec: str) -> Callable[..., Any]:
        """The callable named by ``"module:function"``."""
        module_name, _, func = spec.partition(":")
        if module_name not in self._codes:
            raise NotFound(f"entry {spec}: no module {module_name!r} in the bundle")
        module = self.import_module(module_name)
        fn = module.__dict__.get(func)
        if not callable(fn):
            raise NotFound(f"entry {spec}: no function {func!r} in module {module_name!r}")
        return fn


_thread = threading.local()


def prepare_thread() -> None:
    """Once per worker thread, after numpy is loaded: route its array data through the budget."""
    if not getattr(_thread, "numpy", False) and "numpy" in sys.modules:
        _guard.numpy_install()
        _thread.numpy = True


# Lazy imports that library C code performs while a script's frame is current: CPython resolves
# them through the current frame's ``__import__`` (ours), but hands the module to the C caller only.
_C_LAZY_IMPORTS = ("numpy.", "_strptime", "encodings.")


def _import_for_c(name: str) -> types.ModuleType:
    """``PyImport_Import`` from C code (it passes a list as ``fromlist``; compiled code never
    does, and scripts cannot call ``__import__`` themselves): a module the process already has,
    or one of the known lazy imports of the libraries scripts use."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    if name.startswith(_C_LAZY_IMPORTS) or name in ("_strptime",):
        return importlib.import_module(name)
    raise PolicyViolation(f"import of {name!r} is not allowed in the sandbox")
