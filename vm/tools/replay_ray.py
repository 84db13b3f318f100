"""The Ray engine of ``edgevm replay`` (``vm.tools.replay``): Ray Data reads the requests
(``read_parquet``, or ``read_text`` for JSON Lines: each line parsed by Python's ``json`` in the
actor, as the local engine does, rather than by Arrow's JSON reader, which infers one schema for
all rows and would change the inputs), ``map_batches`` runs them over a fixed pool of actors
(``ActorPoolStrategy``), each one ``Replayer`` that created its ``Runtime`` and loaded the bundle
once, and ``write_parquet`` writes the results. Without an address (and no Ray already running in
this process) ``ray.init`` starts a local cluster of ``workers`` CPUs, shut down at the end.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TextIO

from vm.errors import EdgeError, Internal, NotFound
from vm.tools.replay import _ERRORS, Replayer, _pyarrow, result_schema


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (a submodule: import it once here)
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


def run(args: tuple, fmt: str, files: list[Path], out_dir: Path, workers: int, batch_rows: int,
        address: str | None, progress: TextIO | None) -> tuple[int, int]:
    """Replay ``files`` on Ray into ``out_dir``; (rows, failed rows)."""
    ray = _ray()
    pa = _pyarrow()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers + 1, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=progress is not None)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress is not None
        paths = [str(f) for f in files]
        # One CPU per actor; reading and writing are I/O and reserve none, or with every CPU held by
        # an actor the read tasks would never be scheduled.
        read = ray.data.read_parquet if fmt == "parquet" else ray.data.read_text
        ds = read(paths, num_cpus=0)
        if len(paths) < 4 * workers:
            # Blocks are what the actors share out, and a file is read as one block (Parquet: per row
            # group at most): split few files, or one actor would get every row.
            ds = ds.repartition(4 * workers)
        ds = ds.map_batches(Replayer, fn_constructor_args=args, batch_size=batch_rows, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
        try:
            ds.write_parquet(str(out_dir), ray_remote_args={"num_cpus": 0})
        except Exception as exc:
            error = _edge_error(exc)
            if error is None:
                raise Internal(f"the Ray job failed: {type(exc).__name__}: {str(exc)[:2000]}") from None
            raise _ERRORS.get(error.code, Internal)(f"replay on Ray: {error.message}") from None
    finally:
        if started:
            ray.shutdown()
    if not any(out_dir.glob("*.parquet")):  # no rows: still an output with the schema
        out_dir.mkdir(parents=True, exist_ok=True)
        pa.parquet.write_table(result_schema(pa.string()).empty_table(), out_dir / "part-00000.parquet")
    codes = pa.parquet.read_table(out_dir, columns=["error_code"]).column("error_code")
    return len(codes), len(codes) - codes.null_count
