"""Driven by test_crash_loop.py: start a thread-mode runtime that updates from a channel, optionally
check it once (``update`` in argv), say what it serves and which update events it saw as one JSON
line, then end the way the parent says on stdin: ``exit`` (os._exit, no shutdown at all), ``close``
(a clean shutdown), or nothing (the parent kills it with SIGKILL)."""
from __future__ import annotations

import json
import os
import sys

from vm.host.runtime import Runtime

rt = Runtime(json.loads(sys.argv[1]))
seen: list[dict] = []
rt.set_update_listener(seen.append)
if "update" in sys.argv[2:]:
    rt.update_now()
loaded = {b["name"]: b["version"] for b in rt.bundles()}
served = rt.infer("s", "b", {})["version"] if "feat" in loaded else None
print(json.dumps({"served": served, "events": seen}), flush=True)
how = sys.stdin.readline().strip()
if how == "exit":
    os._exit(3)
rt.close()
