"""Interpreter-level guards (C, native/guard/): deadlines through asynchronous exceptions, the
per-call memory budget, immutable library classes; and the per-thread call context
(``vm.guard.context``). The lowest layer of the runtime: it imports nothing else of edgevm."""
