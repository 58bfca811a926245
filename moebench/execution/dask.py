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

``--scheduler`` takes ``tcp://HOST:PORT`` (or another of Dask's protocols), ``HOST:PORT``, or the
scheduler file that ``dask scheduler --scheduler-file FILE`` writes; :func:`reachable_scheduler`
checks it before a run writes anything.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..cell.rows import crashed_rows
from ..cell.spec import CellSpec
from ..errors import MoebenchError, SchedulerError, describe_error
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


#: Seconds to wait for an existing scheduler to answer before the run stops.
CONNECT_TIMEOUT = 30.0

#: The protocols of Dask's comms that reach a scheduler on another process or machine.
PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")

EXPECTED_ADDRESS = ("expected tcp://HOST:PORT, HOST:PORT or a scheduler file (the JSON that "
                    "'dask scheduler --scheduler-file FILE' writes)")

_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?")


def _address_problem(address: str) -> str | None:
    """What is wrong with ``address`` as ``[PROTOCOL://]HOST:PORT``; ``None``: nothing."""
    protocol, scheme, rest = address.rpartition("://")
    if scheme and protocol not in PROTOCOLS:
        return f"unknown protocol {protocol!r} (Dask's are {', '.join(PROTOCOLS)})"
    host, colon, port = rest.rpartition(":")
    if not colon:
        return "no :PORT" if scheme else "not HOST:PORT, and no scheduler file of that name"
    if not host:
        return "no HOST before the :PORT"
    if not _HOST.fullmatch(host):
        return f"{host!r} is not a host name or IP address (IPv6 in brackets: [::1])"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port {port!r} is not a number from 1 to 65535"
    return None


def _bad_address(value: str, problem: str) -> SchedulerError:
    return SchedulerError(f"--scheduler {value!r}: {problem}; {EXPECTED_ADDRESS}")


def scheduler_address(value: str) -> str:
    """The address of the Dask scheduler that ``--scheduler VALUE`` names.

    Parameters
    ----------
    value
        ``tcp://HOST:PORT`` (or ``tls://``, ``ws://``, ``wss://``, ``ucx://``), ``HOST:PORT``
        (TCP), or the path of a scheduler file: JSON whose ``address`` is such an address.

    Returns
    -------
    str
        The address to connect to (that of the file for a scheduler file).

    Raises
    ------
    SchedulerError
        ``--scheduler 'VALUE': what is wrong; expected ...``, in one line.
    """
    text = value.strip()
    if not text:
        raise _bad_address(value, "empty")
    if "://" not in text and Path(text).is_file():
        try:
            address = json.loads(Path(text).read_text(encoding="utf-8"))["address"]
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
            raise _bad_address(value, f"a file, but not a scheduler file ({describe_error(exc)})"
                               ) from None
        if not isinstance(address, str) or _address_problem(address) is not None:
            raise _bad_address(value, f"the scheduler file's address {address!r} is not one")
        return address
    problem = _address_problem(text)
    if problem is not None:
        raise _bad_address(value, problem)
    return text


def reachable_scheduler(value: str, timeout: float | None = None) -> str:
    """:func:`scheduler_address`, checked to accept connections within ``timeout`` seconds.

    A run calls it before it writes anything, so that a scheduler nobody runs at that address
    costs no results folder. Protocols over TCP (all but ``ucx``) get a plain TCP connection,
    closed at once; the Dask handshake follows when the run connects.

    Parameters
    ----------
    value
        What ``--scheduler`` was given.
    timeout
        Seconds to wait for the connection (default :data:`CONNECT_TIMEOUT`).

    Returns
    -------
    str
        The scheduler's address.

    Raises
    ------
    SchedulerError
        A malformed address, or nothing accepting connections there, in one line.
    """
    address = scheduler_address(value)
    protocol, scheme, rest = address.rpartition("://")
    if scheme and protocol == "ucx":
        return address
    host, _, port = rest.rpartition(":")
    wait = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=wait).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise SchedulerError(f"--scheduler {value!r}: cannot reach a Dask scheduler at "
                             f"{address}: {reason} (waited up to {wait:g} s); is 'dask "
                             "scheduler' running there?") from None
    return address


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


def connect_client(distributed: Any, address: str, timeout: float | None = None) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address``, or an error within about twice
    ``timeout`` seconds (default :data:`CONNECT_TIMEOUT`).

    ``Client(address, timeout=...)`` bounds the TCP connection, but not the wait for the
    scheduler's handshake: a listener that accepts and never speaks Dask would hold the run
    forever. The client is made in a helper thread; one that has not answered in time is left
    to it (it holds no result) and the run stops.

    Raises
    ------
    SchedulerError
        The scheduler could not be reached, or did not answer in time.
    """
    wait = CONNECT_TIMEOUT if timeout is None else timeout
    made: dict[str, Any] = {}

    def connect() -> None:
        try:
            made["client"] = distributed.Client(address, timeout=wait)
        except BaseException as exc:  # handed to the caller's thread
            made["error"] = exc

    thread = threading.Thread(target=connect, name="moebench-dask-connect", daemon=True)
    thread.start()
    thread.join(2 * wait)
    if "client" in made:
        return made["client"]
    if "error" in made:
        raise SchedulerError(f"cannot reach the Dask scheduler at {address}: "
                             f"{made['error']}") from None
    raise SchedulerError(f"cannot reach the Dask scheduler at {address}: no Dask handshake "
                         f"within {2 * wait:g} s (is a Dask scheduler of a compatible version "
                         "listening there?)")


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
        Address of an existing scheduler (``tcp://host:8786``) or its scheduler file
        (:func:`scheduler_address`); ``None`` starts a ``LocalCluster`` on this machine.
    heartbeats
        Folder of the running cells' heartbeats (:mod:`.heartbeat`; written by workers that
        see it: a ``LocalCluster``, a shared file system); ``None``: none.

    Raises
    ------
    SchedulerError
        ``scheduler`` is no scheduler address.
    """

    def __init__(self, jobs: int = 1, threads: int = 1, scheduler: str | None = None,
                 heartbeats: Path | None = None):
        self.jobs, self.threads = max(1, jobs), max(1, threads)
        self.scheduler = None if scheduler is None else scheduler_address(scheduler)
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
                    client = connect_client(distributed, self.scheduler)
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
