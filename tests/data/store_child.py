"""A writer process for tests/data/test_store_crash.py: ``store_child.py CONFIG_JSON MODE ACKS_FILE``.

``ingest``: tracks events numbered from the highest already stored + 1, writing each number to
ACKS_FILE once ``track`` returned, until killed. ``fill``: runs under RLIMIT_FSIZE (SIGXFSZ ignored,
so a write past the limit fails like a full disk) and tracks until ``track`` refuses; prints what it
saw as JSON.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys

from vm.errors import EdgeError, ResourceExhausted
from vm.host.runtime import Runtime


def event(i: int) -> dict:
    return {"table": "clicks", "ts": 1_000_000 + i, "type": "click", "page_id": "JD_HOME", "item_id": i,
            "price": float(i), "query_text": f"secret query {i} " + "x" * 200, "liked": True}


def main() -> int:
    config, mode, acks = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    if mode == "fill":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(sys.argv[4])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    with Runtime(config) as rt:
        store = rt._store
        top = store._tables["clicks"].conn.execute("SELECT max(ts) - 1000000 FROM events").fetchone()[0]
        i = 0 if top is None else top + 1
        if mode == "ingest":
            fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, b"ready\n")
            while True:
                rt.track(event(i))
                os.write(fd, b"%d\n" % i)
                i += 1
        accepted, error = 0, None
        for _ in range(200_000):
            try:
                rt.track(event(i + accepted))
                accepted += 1
            except ResourceExhausted as exc:
                error = exc.name
                break
        again = None
        try:
            rt.track(event(10**9))
            store.flush()
            rt.track(event(10**9 + 1))
        except EdgeError as exc:
            again = exc.name
        store.flush()
        rows = store._tables["clicks"].reader().execute("SELECT count(*) FROM events").fetchone()[0]
        print(json.dumps({"accepted": accepted, "error": error, "again": again, "rows": rows,
                          "metrics": store.metrics()["tables"]["clicks"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
