"""Driven by test_crash.py: start a runtime that updates from a channel, say ``ready``, wait for a
line on stdin, run one check (download, verify, activate, swap), say ``done``. The test kills it
with SIGKILL at a random moment of that check."""
from __future__ import annotations

import json
import sys
import time

from vm.host.runtime import Runtime

rt = Runtime(json.loads(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
began = time.monotonic()
report = rt.update_now()
print("done", time.monotonic() - began, json.dumps([e["event"] for e in report]), flush=True)
rt.close()
