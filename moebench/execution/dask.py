"""The Dask executor: cells as tasks on a ``distributed`` cluster.

Each cell is one Dask task. On the Dask worker the task runs the cell exactly as the local
executor does, in a persistent, killable moebench worker process of that Dask worker
(:func:`moebench.execution.local.worker_pool`), so the hard wall-clock limit, the memory limit
and the ``crashed`` status of a segfaulting plugin behave the same, and the Dask worker survives
its plugins. The task carries only the cell's description: its data is generated or loaded on
the worker from the cell's seeds.

A Dask worker lost mid-run (a node that goes away) fails its tasks; the scheduler runs them
again on another worker up to ``distributed.scheduler.allowed-failures`` times. moebench sets
that to 1 for the ``LocalCluster`` it starts (a cell is retried once, then recorded
``crashed``); an existing scheduler keeps its own setting.

Results reach the store in the client process as each task finishes, so resume, keys and the
tables are those of the local executor.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from ..cell.rows import crashed_rows
from ..cell.spec import CellSpec
from ..errors import MoebenchError, describe_error
from .heartbeat import heartbeat_file, heartbeat_folder, remove_heartbeat
from .interrupts import StopRequest
from .limits import Limits
from .local import POLL, Report, resolve_future, worker_pool
from .worker import execute_cell

#: Configuration for clusters moebench starts itself: workers may start processes (the cells'
#: killable workers), and a cell whose worker dies is retried once.
CLUSTER_CONFIG = {
    "distributed.worker.daemon": False,
    "distributed.scheduler.allowed-failures": 1,
}


def run_cell_on_worker(spec: CellSpec, limits: Limits, threads: int,
                       heartbeat: str | None = None) -> list[dict[str, Any]]:
    """The Dask task of one cell: run it in this Dask worker's pool of one killable process
    (``heartbeat``: its heartbeat file, written where this machine sees the run folder)."""
    pool = worker_pool(1, threads)
    future = pool.schedule(execute_cell, (spec, limits, heartbeat), timeout=limits.wall)
    try:
        return resolve_future(spec, limits, future)
    finally:
        remove_heartbeat(heartbeat)


def _import_distributed():
    try:
        import dask
        import distributed
    except ImportError:
        raise MoebenchError("--executor dask needs the 'distributed' package: pip install "
                            "'moebench[dask]'") from None
    return dask, distributed


class DaskExecutor:
    """Run cells as Dask tasks.

    Parameters
    ----------
    jobs
        Workers of the ``LocalCluster`` started when no ``scheduler`` is given.
    threads
        Torch threads of each cell's process.
    scheduler
        Address of an existing scheduler (``tcp://host:8786``); ``None`` starts a
        ``LocalCluster`` on this machine.
    heartbeats
        Folder of the running cells' heartbeats (:mod:`.heartbeat`; written by workers that
        see it: a ``LocalCluster``, a shared file system); ``None``: none.
    """

    def __init__(self, jobs: int = 1, threads: int = 1, scheduler: str | None = None,
                 heartbeats: Path | None = None):
        self.jobs, self.threads, self.scheduler = max(1, jobs), max(1, threads), scheduler
        self.heartbeats = heartbeats

    def run(self, cells: list[tuple[CellSpec, Limits]], report: Report,
            stop: StopRequest) -> None:
        """Submit every cell, ``report`` each one's rows as its task finishes."""
        dask, distributed = _import_distributed()
        with dask.config.set(CLUSTER_CONFIG):
            cluster = None
            try:
                if self.scheduler is None:
                    cluster = distributed.LocalCluster(
                        n_workers=self.jobs, threads_per_worker=1, processes=True,
                        dashboard_address=None, silence_logs=40,
                    )
                    client = distributed.Client(cluster)
                else:
                    try:
                        client = distributed.Client(self.scheduler, timeout=30)
                    except OSError as exc:
                        raise MoebenchError(f"cannot reach the Dask scheduler at "
                                            f"{self.scheduler}: {exc}") from None
                try:
                    with heartbeat_folder(self.heartbeats) as folder:
                        self._run(client, distributed, cells, report, stop, folder)
                finally:
                    client.close()
            finally:
                if cluster is not None:
                    cluster.close()

    def _run(self, client, distributed, cells, report: Report, stop: StopRequest,
             folder: Path | None = None) -> None:
        run_id = uuid.uuid4().hex[:8]
        specs: dict[str, tuple[CellSpec, Limits]] = {}
        futures = []
        for spec, limits in cells:
            key = f"moebench-cell-{spec.key}-{run_id}"
            specs[key] = (spec, limits)
            futures.append(client.submit(run_cell_on_worker, spec, limits, self.threads,
                                         heartbeat_file(folder, spec), key=key, pure=False))
        pending = distributed.as_completed(futures)
        remaining = set(futures)
        cancelled = False
        while remaining:
            if stop.requested:
                if not cancelled:
                    running = _running_keys(client)
                    client.cancel([f for f in remaining if f.key not in running])
                    cancelled = True
                if stop.must_kill():
                    client.cancel(list(remaining), force=True)
                    return
            batch = pending.next_batch(block=False) if pending.has_ready() else []
            if not batch:
                time.sleep(POLL)
                continue
            for future in batch:
                remaining.discard(future)
                spec, limits = specs[future.key]
                remove_heartbeat(heartbeat_file(folder, spec))
                if future.status == "cancelled":
                    continue
                if future.status == "error":
                    if stop.requested:
                        continue
                    exc = future.exception()
                    report(crashed_rows(spec, None, "the Dask worker running it was lost: "
                                                    + describe_error(exc)))
                    continue
                report(resolve_future(spec, limits, future))


def _running_keys(client) -> set[str]:
    """Keys of the tasks on a worker already (they may finish within the grace)."""
    try:
        return {key for keys in client.processing().values() for key in keys}
    except Exception:
        return set()
