"""The Ray engine of ``edgevm replay`` (``vm.tools.replay``): the job is cut into work items (a
slice of a Parquet row group, a byte range of a JSON Lines file, or a chunk of users with their
events; only the driver reads footers and file sizes), run over a fixed pool of Ray actors
(``ray.util.ActorPool``, one CPU each), each one ``Replayer`` that created its ``Runtime`` and
loaded the bundle once; each actor reads its items, runs them and writes their results as Parquet
files itself, and the driver only sees each item's row and error counts (its progress on stderr).

Why plain actors, and not Ray Data's ``read_parquet`` → ``map_batches`` → ``write_parquet``:
measured on the 2-core machine (docs/replay.md, "Measured here"), Ray Data ran the reading, the
``repartition`` that splits a few files into blocks for every actor (a barrier before the first
row ran) and the writing as tasks in worker processes of their own, and its actors import Ray
Data before they start; those cost seconds per job, most of the gap to the local engine. The
actors already hold pyarrow, and the paths are on a filesystem every node sees (docs/replay.md,
"Scaling out").

Without an address (and no Ray already running in this process) ``ray.init`` starts a local
cluster of ``workers`` CPUs, shut down at the end.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, TextIO

from vm.errors import BadInput, EdgeError, Internal, NotFound
from vm.tools.replay import _ERRORS, TEXT_COLUMN, PartWriter, Progress, Replayer, _pyarrow, finish

ITEMS_PER_WORKER = 4  # work items per actor: enough to even out the tail, few enough to keep files large
MIN_ITEM_BYTES = 64 << 10  # a JSON Lines item reads at least this much


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise NotFound("replay --engine ray needs Ray: pip install 'edgevm[replay]'") from None
    return ray


def _edge_error(exc: BaseException) -> EdgeError | None:
    """The ``EdgeError`` a Ray task or actor raised, found in what Ray wraps it in."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, EdgeError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def work_items(fmt: str, files: list[Path], workers: int, batch_rows: int) -> list[dict[str, Any]]:
    """The job as items in input order: ``{"index", "path", "group", "start", "stop"}``, rows
    ``start:stop`` of row group ``group`` (Parquet: whole batches of ``batch_rows``), or bytes
    ``start:stop`` of the file (JSON Lines, ``group`` -1: the lines that start in the range)."""
    pa = _pyarrow()
    items: list[dict[str, Any]] = []
    want = ITEMS_PER_WORKER * workers
    if fmt == "parquet":
        groups = []
        for path in files:
            try:
                meta = pa.parquet.ParquetFile(path).metadata
            except (OSError, pa.ArrowException) as exc:
                raise BadInput(f"replay input {path} is not a readable Parquet file: {exc}") from None
            groups += [(path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        total = sum(n for _, _, n in groups)
        step = batch_rows * max(1, round(total / (want * batch_rows)))
        for path, g, n in groups:
            items += [{"path": str(path), "group": g, "start": a, "stop": min(a + step, n)} for a in range(0, n, step)]
    else:
        total = sum(f.stat().st_size for f in files)
        step = max(MIN_ITEM_BYTES, math.ceil(total / want))
        for path in files:
            size = path.stat().st_size
            items += [{"path": str(path), "group": -1, "start": a, "stop": min(a + step, size)}
                      for a in range(0, size, step)]
    return [{"index": i, **item, "units": None} for i, item in enumerate(items)]


class _Actor:
    """One Ray actor: a ``Replayer`` that runs the work items it is given and writes their results."""

    def __init__(self, args: tuple, out_dir: str, batch_rows: int) -> None:
        self.out_dir, self.batch_rows = Path(out_dir), batch_rows
        self.replayer: Replayer | None = None
        self.load_error: EdgeError | None = None
        try:
            self.replayer = Replayer(*args)
        except EdgeError as exc:  # raised by run(): Ray reports a constructor's error only as the actor's death
            self.load_error = exc

    def run(self, item: dict[str, Any]) -> tuple[int, int]:
        """Run one work item into its own Parquet files; (rows, failed rows)."""
        if self.replayer is None:
            assert self.load_error is not None
            raise self.load_error
        writer = PartWriter(self.out_dir, f"part-{item['index']:05d}")
        rows = failed = 0
        try:
            for result in self._run(item):
                writer.write(result)
                rows += result.num_rows
                failed += result.num_rows - result.column("error_code").null_count
        finally:
            writer.close()
        return rows, failed

    def _run(self, item: dict[str, Any]) -> Any:
        """The result tables of one item, a batch at a time."""
        pa = _pyarrow()
        if item["units"] is not None:
            yield self.replayer.users(item["units"])
            return
        if item["group"] >= 0:
            table = pa.parquet.ParquetFile(item["path"]).read_row_group(item["group"])
            for b in table.slice(item["start"], item["stop"] - item["start"]).to_batches(self.batch_rows):
                yield self.replayer(pa.Table.from_batches([b]))
            return
        lines: list[str] = []
        with open(item["path"], "rb") as f:
            if item["start"] > 0:  # the line under way at start belongs to the item before
                f.seek(item["start"] - 1)
                f.readline()
            while f.tell() < item["stop"] and (line := f.readline()):
                text = line.decode("utf-8", errors="replace")
                if text.strip():
                    lines.append(text)
                if len(lines) == self.batch_rows:
                    yield self.replayer(pa.table({TEXT_COLUMN: pa.array(lines, pa.string())}))
                    lines = []
        if lines:
            yield self.replayer(pa.table({TEXT_COLUMN: pa.array(lines, pa.string())}))


def run(args: tuple, fmt: str, files: list[Path], work: list[bytes] | None, out_dir: Path, workers: int,
        batch_rows: int, address: str | None, progress: TextIO | None) -> tuple[int, int]:
    """Replay ``files`` (or the chunks of users ``work``, ``vm.tools.replay_events``) on Ray into
    ``out_dir``; (rows, failed rows)."""
    ray = _ray()
    items = work_items(fmt, files, workers, batch_rows) if work is None else [
        {"index": i, "path": None, "group": -1, "start": 0, "stop": 0, "units": chunk} for i, chunk in enumerate(work)]
    out_dir.mkdir(parents=True, exist_ok=True)
    done = Progress(progress)
    started = not ray.is_initialized()
    if started and items:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=progress is not None)
    actors = []
    try:
        if items:
            from ray.util import ActorPool

            # Restarted (and the item retried, rewriting its own files) if a node or process dies.
            actor = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(_Actor)
            actors = [actor.remote(args, str(out_dir), batch_rows) for _ in range(workers)]
            try:
                for rows, errors in ActorPool(actors).map_unordered(lambda a, item: a.run.remote(item), items):
                    done.add(rows, errors)
            except Exception as exc:
                error = _edge_error(exc)
                if error is None:
                    raise Internal(f"the Ray job failed: {type(exc).__name__}: {str(exc)[:2000]}") from None
                raise _ERRORS.get(error.code, Internal)(f"replay on Ray: {error.message}") from None
    finally:
        for a in actors:
            ray.kill(a)
        if started and ray.is_initialized():
            ray.shutdown()
    finish(out_dir)
    return done.rows, done.errors
