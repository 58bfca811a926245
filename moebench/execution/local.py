"""The local executor: cells in a pool of persistent, killable worker processes.

Built on `pebble <https://pebble.readthedocs.io>`_'s ``ProcessPool``, which gives each task a
timeout that *kills* the worker running it, reports a worker that died (segfault, ``os._exit``,
the OOM killer) as that task's ``ProcessExpired`` with its exit code, and replaces dead workers
while the other tasks go on. moebench adds the policy: the hard limit per cell, the statuses, a
bounded submission window (so a stop request leaves little queued work) and the Ctrl-C logic.

Workers start with the ``spawn`` method (no forked torch/OpenMP state) and are reused across
runs of the same process while nothing they inherited (``sys.path``, environment, thread count)
has changed, so the import of torch is paid once per worker, not per cell or per run.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.context
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing import spawn
from pathlib import Path
from typing import Any

from pebble import ProcessExpired, ProcessPool

from ..cell.rows import crashed_rows, killed_rows
from ..cell.spec import CellSpec
from ..errors import describe_error
from .heartbeat import heartbeat_file, heartbeat_folder, remove_heartbeat
from .interrupts import StopRequest
from .limits import Limits, memory_limit_note, worker_init
from .worker import execute_cell

Report = Callable[[list[dict[str, Any]]], None]


#: Environment of the worker processes, where the user has not set these variables.
#: ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads (torch's runtime and the native kernel's, two
#: runtimes in one process) sleep instead of spinning when they wait. With another CPU-bound
#: process on the machine, spinning threads take the cores from the threads that have work:
#: joint EM at n = 4000 took 83-275 ms per iteration spinning against 4-8 ms passive on a busy
#: 2-core machine (``python -m measurements.busy_machine``); the results are the same bit for bit.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

_launching = threading.local()
_original_preparation = spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    data = _original_preparation(name)
    if getattr(_launching, "worker", False):
        # A worker needs moebench's modules only: re-running the user's __main__ in it (what
        # spawn does by default) would rerun a script that calls run_suite without a
        # ``if __name__ == "__main__"`` guard.
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


spawn.get_preparation_data = _preparation_data


class _WorkerProcess(multiprocessing.context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj):
        _launching.worker = True
        added = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
        os.environ.update(added)  # read by the child's OpenMP runtimes when they load
        try:
            return multiprocessing.context.SpawnProcess._Popen(process_obj)
        finally:
            _launching.worker = False
            for k in added:
                os.environ.pop(k, None)


class _WorkerContext(multiprocessing.context.SpawnContext):
    """``spawn``, without importing the parent's ``__main__`` in the workers."""

    Process = _WorkerProcess

#: How often (seconds) the supervisor wakes up to check stop requests.
POLL = 0.2

_pool: ProcessPool | None = None
_pool_key: tuple[Any, ...] | None = None


def _fingerprint(jobs: int, threads: int) -> tuple[Any, ...]:
    return (jobs, threads, tuple(sys.path), tuple(sorted(os.environ.items())))


def worker_pool(jobs: int, threads: int) -> ProcessPool:
    """A pool of ``jobs`` workers with ``threads`` torch threads each, reused when possible."""
    global _pool, _pool_key
    key = _fingerprint(jobs, threads)
    if _pool is not None and (_pool_key != key or not _pool.active):
        shutdown_pool()
    if _pool is None:
        _pool = ProcessPool(max_workers=jobs, initializer=worker_init, initargs=(threads,),
                            context=_WorkerContext())
        _pool_key = key
    return _pool


def shutdown_pool(kill: bool = False) -> None:
    """Stop the cached pool (killing its workers with ``kill``)."""
    global _pool, _pool_key
    pool, _pool, _pool_key = _pool, None, None
    if pool is None:
        return
    if kill:
        pool.stop()
    else:
        pool.close()
    pool.join(timeout=30)
    if pool.active:
        pool.stop()
        pool.join()


atexit.register(shutdown_pool, True)


def _environment_value(name: str) -> str | None:
    """A worker's value of an environment variable (tests)."""
    return os.environ.get(name)


def resolve_future(spec: CellSpec, limits: Limits, future: Future) -> list[dict[str, Any]]:
    """The rows of a finished task: its result, or the rows of a killed or crashed cell."""
    try:
        return future.result()
    except FutureTimeout:
        return killed_rows(spec, limits.wall or 0.0)
    except ProcessExpired as exc:  # under a memory limit, perhaps its cause: say so
        return crashed_rows(spec, exc.exitcode,
                            memory_limit_note(limits.memory) if limits.memory else "")
    except BaseException as exc:  # the pool could not run or return it (e.g. unpicklable)
        return crashed_rows(spec, None, describe_error(exc))


class LocalExecutor:
    """Run cells in ``jobs`` worker processes on this machine.

    Parameters
    ----------
    jobs
        Number of worker processes (at least one: cells never run in the supervising process).
    threads
        Torch threads per worker.
    heartbeats
        Folder where the running cells write their heartbeats (:mod:`.heartbeat`), created
        for the run and removed after it; ``None``: no heartbeats.
    """

    def __init__(self, jobs: int = 1, threads: int = 1, heartbeats: Path | None = None):
        self.jobs, self.threads = max(1, jobs), max(1, threads)
        self.heartbeats = heartbeats

    def run(self, cells: list[tuple[CellSpec, Limits]], report: Report,
            stop: StopRequest) -> None:
        """Run ``cells`` and ``report`` each one's rows as it finishes (in this process).

        On a stop request no new cell is submitted; cells in flight may finish until
        ``stop.must_kill()``, then the pool is killed and those cells are not reported.
        """
        with heartbeat_folder(self.heartbeats) as folder:
            self._run(cells, report, stop, folder)

    def _run(self, cells: list[tuple[CellSpec, Limits]], report: Report, stop: StopRequest,
             folder: Path | None) -> None:
        pool = worker_pool(self.jobs, self.threads)
        queue = list(reversed(cells))
        window = self.jobs + 1  # queued beyond the running ones: keeps workers busy
        inflight: dict[Future, tuple[CellSpec, Limits]] = {}
        try:
            while queue or inflight:
                while queue and len(inflight) < window and not stop.requested:
                    spec, limits = queue.pop()
                    future = pool.schedule(execute_cell,
                                           (spec, limits, heartbeat_file(folder, spec)),
                                           timeout=limits.wall)
                    inflight[future] = (spec, limits)
                if stop.requested:
                    queue.clear()
                    # cancel the queued cells only: cancelling a running pebble task kills its
                    # worker, and the first Ctrl-C lets the running ones finish
                    for future in [f for f in inflight if not f.running() and f.cancel()]:
                        del inflight[future]
                    if stop.must_kill() and inflight:
                        shutdown_pool(kill=True)
                        return
                if not inflight:
                    break
                finished, _ = wait(inflight, timeout=POLL, return_when=FIRST_COMPLETED)
                # in the order they were submitted (``finished`` is a set): cells that end in
                # the same poll reach cells.jsonl in the suite's order on every run
                for future in [f for f in inflight if f in finished]:
                    spec, limits = inflight.pop(future)
                    remove_heartbeat(heartbeat_file(folder, spec))  # a killed cell's too
                    if future.cancelled():
                        continue
                    if stop.requested and future.exception() is not None:
                        continue  # killed by the stop itself: not this cell's fault, rerun it
                    report(resolve_future(spec, limits, future))
        except BaseException:
            shutdown_pool(kill=True)
            raise
