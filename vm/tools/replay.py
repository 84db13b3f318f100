"""``edgevm replay``: run a bundle over logged requests on a server, on this machine or a Ray cluster.

The rows go through the device's own runtime (``vm.Runtime``: the loader, the sandbox, the policy,
the native ops, ONNX Runtime), one ``Runtime`` per worker that loads the bundle once, so each result
is the msgpack a device returns for the same request (docs/replay.md). Two engines share
``Replayer``, the per-worker part:

* ``local``: a process pool on this machine (``workers`` processes, started fresh with ``spawn``);
* ``ray``: Ray Data, ``read_parquet`` / ``read_text`` → ``map_batches`` over an actor pool (each actor
  one ``Replayer``) → ``write_parquet``; ``ray.init()`` starts a local cluster when no address is given.

Input: Parquet (a file or a directory of ``*.parquet``) or JSON Lines (``*.jsonl``, ``*.ndjson``,
``*.json``), one request per row: the ``key_column`` is the request key, the other columns (fields)
are the ``inputs`` the entry receives. Output: a directory of Parquet files with the key, ``result``
(the msgpack bytes the entry returned), and for a failed row ``error_code``, ``error_name`` and
``error`` (``vm.errors``); a failing row never stops the job. A bundle that does not load does, with
its typed error, before any row runs.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import msgpack

from vm.bundle import keys as keys_mod
from vm.bundle import loader
from vm.errors import ALL_ERRORS, BadInput, EdgeError, Internal, NotFound

if TYPE_CHECKING:
    import pyarrow as pa

ENGINES = ("local", "ray")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_COLUMN = "text"  # the one column of a JSON Lines batch
RESULT_COLUMNS = ("result", "error_code", "error_name", "error")
# Every row runs: a breaker that opened after a few failing rows would fail the rows after them
# without running them, and which rows those are would depend on batch order and timing.
REPLAY_DEFAULTS: dict[str, Any] = {"deadline_ms": 10_000, "breaker_failures": 1 << 30}
PROGRESS_EVERY_S = 2.0
_ERRORS = {cls.code: cls for cls in ALL_ERRORS}


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: rows in, rows that failed, where the output is, how long it took."""

    rows: int
    errors: int
    out: Path
    engine: str
    workers: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (pyarrow.parquet is a submodule: import it once here)
    except ImportError:
        raise NotFound("replay needs pyarrow: pip install 'edgevm[replay]'") from None
    return pyarrow


def keyring_doc(ring: keys_mod.DeviceKeys) -> dict[str, list[str]]:
    """A keyring as the plain dict ``keys.load_device`` reads (base64 keys), to hand to worker
    processes and Ray actors, which cannot share the driver's key objects."""
    return {"verify": [base64.b64encode(bytes(k)).decode() for k in ring.verify.values()],
            "decrypt": [base64.b64encode(bytes(k)).decode() for k in ring.decrypt.values()]}


def input_files(path: str | Path) -> tuple[str, list[Path]]:
    """The input's format (``parquet`` or ``jsonl``) and its files, sorted: ``path`` itself, or the
    files of one format in the directory ``path``."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith((".", "_")))
    elif p.is_file():
        files = [p]
    else:
        raise NotFound(f"replay input {p} not found")
    kinds = {"parquet" if f.suffix in PARQUET_SUFFIXES else "jsonl" if f.suffix in JSONL_SUFFIXES else None
             for f in files}
    if not files or None in kinds or len(kinds) != 1:
        raise BadInput(f"replay input {p}: expected Parquet ({', '.join(PARQUET_SUFFIXES)}) or JSON Lines "
                       f"({', '.join(JSONL_SUFFIXES)}) files, one format, got "
                       f"{', '.join(sorted(f.name for f in files)[:5]) or 'none'}")
    return kinds.pop(), files


def result_schema(key_type: pa.DataType) -> pa.Schema:
    """The output's schema: the request key, the result's msgpack bytes, the typed error of a failed row."""
    pa = _pyarrow()
    return pa.schema([("key", key_type), ("result", pa.binary()), ("error_code", pa.int32()),
                      ("error_name", pa.string()), ("error", pa.string())])


class Replayer:
    """One ``Runtime`` with the bundle loaded (once); each call turns a batch of requests into a
    batch of results. The unit of work of both engines: a local worker process holds one, a Ray
    actor is one."""

    def __init__(self, bundle: bytes, keyring: Mapping[str, Any], config: Mapping[str, Any], system: str,
                 business: str, key_column: str) -> None:
        from vm import Runtime  # the device's public facade (docs/architecture.md)

        self.system, self.business, self.key_column = system, business, key_column
        config = {**REPLAY_DEFAULTS, **config, "keys": dict(keyring)}
        self._data_dir = None
        if "data" in config:  # the event store lives in a directory of this worker's own
            self._data_dir = tempfile.TemporaryDirectory(prefix="edgevm-replay-events-")
            config["data"] = {**config["data"], "dir": self._data_dir.name}
        self.runtime = Runtime(config)
        try:
            self.runtime.load(bundle)
        except BaseException:
            self.close()
            raise

    def __call__(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        pa = _pyarrow()
        if batch.schema.names == [TEXT_COLUMN]:
            keys, payloads = self._from_lines(batch.column(TEXT_COLUMN).to_pylist())
            key_array = pa.array(keys, pa.string())
        else:
            if self.key_column not in batch.schema.names:
                raise BadInput(f"replay input has no key column {self.key_column!r} (columns: "
                               f"{', '.join(batch.schema.names)})")
            key_array = batch.column(self.key_column)
            rows = batch.drop_columns([self.key_column]).to_pylist()
            payloads = [msgpack.packb(row, use_bin_type=True) for row in rows]
        return self._table(key_array, [self._run(payload) for payload in payloads])

    def users(self, packed: bytes) -> pa.Table:
        """Requests rebuilt from event tables (a chunk of ``vm.tools.replay_events.units``): each
        user's requests in time order, each run once the store holds the user's events with ``ts``
        up to the request time (the store emptied for each user). An event the store refuses fails
        that request and the user's later ones with its error, as their history is not the device's."""
        pa = _pyarrow()
        keys: list[Any] = []
        outcomes: list[tuple[bytes | None, EdgeError | None]] = []
        for _user, requests, events in msgpack.unpackb(packed, raw=False, strict_map_key=False):
            seen = dict.fromkeys(events, 0)  # events of each table already in the store
            fresh, broken = True, None
            for key, now, payload, code, message in requests:
                keys.append(key)
                if code is not None:
                    outcomes.append((None, _ERRORS.get(code, Internal)(message)))
                    continue
                if broken is None:
                    new = []
                    for table, rows in events.items():
                        end = seen[table]
                        while end < len(rows) and rows[end]["ts"] <= now:
                            end += 1
                        new += rows[seen[table]:end]
                        seen[table] = end
                    try:
                        self.runtime.replay_events(new, now_ms=now, reset=fresh)
                        fresh = False
                    except EdgeError as exc:
                        broken = type(exc)(f"the user's events up to {now}: {exc.message}")
                outcomes.append((None, broken) if broken is not None else self._run(payload))
        key_array = pa.array(keys)
        return self._table(key_array if key_array.type != pa.null() else key_array.cast(pa.string()), outcomes)

    def _table(self, key_array: pa.Array, outcomes: list[tuple[bytes | None, EdgeError | None]]) -> pa.Table:
        """The output rows: key, result, typed error, result columns (``vm.tools.replay_columns``)."""
        from vm.tools import replay_columns

        pa = _pyarrow()
        out: dict[str, list[Any]] = {name: [] for name in RESULT_COLUMNS}
        for result, error in outcomes:
            out["result"].append(result)
            out["error_code"].append(None if error is None else error.code)
            out["error_name"].append(None if error is None else error.name)
            out["error"].append(None if error is None else error.message)
        schema = result_schema(key_array.type)
        fields, arrays = replay_columns.columns(out["result"])
        return pa.Table.from_arrays([key_array, *(pa.array(out[c], schema.field(c).type) for c in RESULT_COLUMNS),
                                     *arrays], schema=pa.schema([*schema, *fields]))

    def _from_lines(self, lines: list[str]) -> tuple[list[str | None], list[bytes | EdgeError]]:
        """JSON Lines: each line's key (as text: JSON keys vary in type from line to line) and its
        inputs packed as msgpack, or the row's error."""
        keys: list[str | None] = []
        payloads: list[bytes | EdgeError] = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError as exc:
                keys.append(None)
                payloads.append(BadInput(f"request is not valid JSON: {exc}"))
                continue
            if not isinstance(row, dict):
                keys.append(None)
                payloads.append(BadInput(f"request must be a JSON object, got {type(row).__name__}"))
                continue
            key = row.pop(self.key_column, None)
            keys.append(None if key is None else key if isinstance(key, str) else json.dumps(key))
            payloads.append(BadInput(f"request has no key {self.key_column!r}") if key is None
                            else msgpack.packb(row, use_bin_type=True))
        return keys, payloads

    def _run(self, payload: bytes | EdgeError) -> tuple[bytes | None, EdgeError | None]:
        if isinstance(payload, EdgeError):
            return None, payload
        try:
            return self.runtime.infer_msgpack(self.system, self.business, payload), None
        except EdgeError as exc:
            return None, exc
        except Exception as exc:  # the runtime raises EdgeErrors only; anything else still fails one row
            return None, Internal(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.close()
        if self._data_dir is not None:
            self._data_dir.cleanup()


def replay(bundle: str | Path | bytes, keys: Any, input: str | Path, *, system: str, business: str,
           out: str | Path, engine: str = "local", workers: int | None = None, ray_address: str | None = None,
           batch_rows: int = 256, key_column: str = "request_id", config: Mapping[str, Any] | None = None,
           events: Mapping[str, str | Path] | None = None, user_column: str = "user_id", time_column: str = "now",
           progress: TextIO | None = sys.stderr) -> ReplayResult:
    """Run entry ``system``/``business`` of ``bundle`` over every request in ``input``; write the
    results to the directory ``out`` (Parquet). ``keys`` is a keyring ``keys.load_device`` reads
    (the replay key of docs/bundle-format.md); ``config`` runtime options (docs/config.md) on top of
    ``REPLAY_DEFAULTS``. With ``events`` (table name → its logged events, Parquet or JSON Lines),
    each request is run on a store holding its user's (``user_column``) events up to its time
    (``time_column``, ms), the tables declared as on the device (``config["data"]["tables"]``;
    ``vm.tools.replay_events``). The bundle is verified and decrypted here first, so a wrong key or
    a broken bundle fails before any worker starts."""
    if engine not in ENGINES:
        raise BadInput(f"replay engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise BadInput(f"batch_rows must be a whole number of at least 1, got {batch_rows!r}")
    workers = workers or os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 4096:
        raise BadInput(f"workers must be a whole number in [1, 4096], got {workers!r}")
    _pyarrow()
    data = bundle if isinstance(bundle, bytes) else Path(bundle).read_bytes()
    ring = keys_mod.load_device(keys)
    extra = dict(config or {})
    if "keys" in extra:
        raise BadInput("replay: give the keys as 'keys', not inside the runtime config")
    max_size = extra.get("max_bundle_bytes", 64 << 20)
    trusted = loader.open_bundle(data, ring, max_size=max_size)
    if business not in trusted.manifest.entries or trusted.manifest.system != system:
        raise NotFound(f"bundle {trusted.name} {trusted.version} has no entry {system}/{business} (it serves "
                       f"{trusted.manifest.system}: {', '.join(sorted(trusted.manifest.entries))})")
    fmt, files = input_files(input)
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BadInput(f"replay output {out_dir} already exists and is not an empty directory")
    args = (data, keyring_doc(ring), extra, system, business, key_column)
    t0 = time.monotonic()
    work = None
    if events is not None:
        from vm.tools import replay_events

        work = replay_events.units(fmt, files, _event_inputs(events, extra), key_column=key_column,
                                   user_column=user_column, time_column=time_column, batch_rows=batch_rows)
    if engine == "local":
        rows, errors = _run_local(args, fmt, files, work, out_dir, workers, batch_rows, progress)
    else:
        from vm.tools import replay_ray

        rows, errors = replay_ray.run(args, fmt, files, work, out_dir, workers, batch_rows, ray_address, progress)
    seconds = time.monotonic() - t0
    result = ReplayResult(rows=rows, errors=errors, out=out_dir, engine=engine, workers=workers, seconds=seconds)
    if progress is not None:
        print(f"replay: done, {rows} rows ({errors} failed) in {seconds:.1f} s, {result.rows_per_s:.0f} rows/s, "
              f"{engine} engine, {workers} workers -> {out_dir}", file=progress, flush=True)
    return result


def _event_inputs(events: Mapping[str, str | Path], config: Mapping[str, Any]) -> dict[str, tuple[str, list[Path]]]:
    """Each event table's input (format, files), checked against the tables the config declares."""
    data = config.get("data")
    declared = data.get("tables", {}) if isinstance(data, Mapping) else {}
    if isinstance(data, Mapping) and "dir" in data:
        raise BadInput("replay: config 'data.dir' is chosen by replay (a directory per worker); give only "
                       "'data.tables' and the store's limits")
    missing = sorted(set(events) - set(declared))
    if missing or not events:
        raise BadInput(f"replay --events: table(s) {', '.join(missing) or '(none given)'} not declared in "
                       "config 'data.tables' (the host app's declaration, as on the devices)")
    return {table: input_files(path) for table, path in events.items()}


# ---- the local engine: a process pool --------------------------------------------------------------

_worker: Replayer | None = None
_worker_error: tuple[int, str] | None = None


def _init_worker(*args: Any) -> None:
    """In a pool process: create its one ``Replayer``; a load error is kept and reported on the
    first batch (an initializer that raises would break the whole pool without saying why)."""
    global _worker, _worker_error
    try:
        _worker = Replayer(*args)
    except EdgeError as exc:
        _worker_error = (exc.code, exc.message)


def _replay_batch(batch: pa.Table | bytes) -> pa.Table | tuple[int, str]:
    """In a pool process: a batch of requests (a table), or a chunk of users (``replay_events``)."""
    if _worker is None:
        assert _worker_error is not None
        return _worker_error
    return _worker.users(batch) if isinstance(batch, bytes) else _worker(batch)


def read_batches(fmt: str, files: list[Path], batch_rows: int) -> Iterator[pa.Table]:
    """The input in batches of at most ``batch_rows`` rows, in file and row order: Parquet record
    batches as they are, JSON Lines as a one-column table of lines (empty lines skipped)."""
    pa = _pyarrow()
    for path in files:
        if fmt == "parquet":
            try:
                source = pa.parquet.ParquetFile(path)
            except (OSError, pa.ArrowException) as exc:
                raise BadInput(f"replay input {path} is not a readable Parquet file: {exc}") from None
            for batch in source.iter_batches(batch_size=batch_rows):
                yield pa.Table.from_batches([batch])
            continue
        lines: list[str] = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    lines.append(line)
                if len(lines) == batch_rows:
                    yield pa.table({TEXT_COLUMN: pa.array(lines, pa.string())})
                    lines = []
        if lines:
            yield pa.table({TEXT_COLUMN: pa.array(lines, pa.string())})


class PartWriter:
    """Result tables into Parquet files ``<stem>-00000.parquet``, ``<stem>-00001.parquet``, ...: a
    table with other result columns than the file's starts the next file (``finish`` brings the
    files of a job to one schema)."""

    def __init__(self, out_dir: Path, stem: str) -> None:
        self.out_dir, self.stem = out_dir, stem
        self.files: list[Path] = []
        self._writer: Any = None

    def write(self, table: pa.Table) -> None:
        pa = _pyarrow()
        if self._writer is None or not self._writer.schema.equals(table.schema, check_metadata=True):
            self.close()
            self.files.append(self.out_dir / f"{self.stem}-{len(self.files):05d}.parquet")
            self._writer = pa.parquet.ParquetWriter(self.files[-1], table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def finish(out_dir: Path) -> None:
    """The end of a job: its Parquet files brought to one schema, or one empty file with the
    schema when no row ran."""
    from vm.tools import replay_columns

    pa = _pyarrow()
    files = sorted(out_dir.glob("*.parquet"))
    if not files:
        pa.parquet.write_table(result_schema(pa.string()).empty_table(), out_dir / "part-00000.parquet")
    replay_columns.unify(files, len(RESULT_COLUMNS) + 1)


class Progress:
    """Rows done, rows/s and errors on ``stream`` every few seconds (and nothing without a stream)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream, self.rows, self.errors = stream, 0, 0
        self.start = self.last = time.monotonic()

    def add(self, rows: int, errors: int) -> None:
        self.rows += rows
        self.errors += errors
        now = time.monotonic()
        if self.stream is not None and now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            print(f"replay: {self.rows} rows, {self.rows / (now - self.start):.0f} rows/s, {self.errors} errors",
                  file=self.stream, flush=True)


def _run_local(args: tuple, fmt: str, files: list[Path], work: list[bytes] | None, out_dir: Path, workers: int,
               batch_rows: int, progress: TextIO | None) -> tuple[int, int]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    done = Progress(progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = PartWriter(out_dir, "part")
    # spawn: the pool's processes start fresh, never a fork of this one (pyarrow's threads, any lock).
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=args) as pool:
        try:
            pending: deque = deque()
            batches = read_batches(fmt, files, batch_rows) if work is None else iter(work)
            while True:
                while len(pending) < 2 * workers and (batch := next(batches, None)) is not None:
                    pending.append(pool.submit(_replay_batch, batch))
                if not pending:
                    break
                table = pending.popleft().result()
                if isinstance(table, tuple):
                    code, message = table
                    raise _ERRORS.get(code, Internal)(f"replay worker could not load the bundle: {message}")
                writer.write(table)
                done.add(table.num_rows, table.num_rows - table.column("error_code").null_count)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            writer.close()
    finish(out_dir)
    return done.rows, done.errors
