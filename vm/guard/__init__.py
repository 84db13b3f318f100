"""Interpreter-level guards (C, native/guard/): deadlines through asynchronous exceptions, the
per-call memory budget, immutable library classes; and the per-thread call context
(``vm.guard.context``). The lowest layer of the runtime: it imports nothing else of edgevm."""

import sysconfig

# A free-threaded CPython (3.13t/3.14t): the guards run without the GIL, and the per-call memory
# budget cannot be enforced in this process (native/guard/budget.c says why).
FREE_THREADED: bool = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
