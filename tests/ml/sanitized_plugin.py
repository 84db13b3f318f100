"""pytest plugin (``-p sanitized_plugin``, loaded by tests/ml/fuzz_sanitized.py): with ``EDGEVM_OPS_SANITIZED=<dir>``, tests run against
the -fsanitize=address,undefined build of vm.ml._ops in ``<dir>/vm/ml`` instead of the normal one."""
from __future__ import annotations

import os
from pathlib import Path

SANITIZED = os.environ.get("EDGEVM_OPS_SANITIZED")

if SANITIZED:
    import sys

    import vm.ml

    assert "vm.ml._ops" not in sys.modules, "vm.ml._ops was imported before the sanitized build could be put first"
    vm.ml.__path__.insert(0, str(Path(SANITIZED) / "vm" / "ml"))
    import vm.ml._ops

    assert Path(vm.ml._ops.__file__).is_relative_to(SANITIZED), f"not the sanitized build: {vm.ml._ops.__file__}"
