"""Per-cell hard limits and the start-up of worker processes.

Two budgets stop a cell:

- the suite's ``budget.timeout`` is the *algorithm clock*, checked by the cell's run
  (:mod:`moebench.cell.compute`) whenever the algorithm reports an iteration (a polite stop:
  the cell ends ``timeout`` with its results);
- the *hard wall-clock limit* kills the worker process running a cell that never calls back (a
  plugin stuck in a loop or a sleep). By default it is :data:`WALL_FACTOR` times the algorithm
  timeout plus :data:`WALL_GRACE` seconds (data loading and metric evaluation are not on the
  algorithm clock); ``budget.wall_timeout`` in a suite or ``moebench run --timeout`` sets it.

An optional ``memory_limit`` caps the address space a cell may add to its worker
(``RLIMIT_AS`` on Linux), so that one cell with a huge ``n`` fails alone with ``crashed``
instead of taking the machine. The worker itself (interpreter, torch, the plugins: about 1 GiB
of address space) is not counted, but even the smallest cell adds some to start: about
:data:`CELL_START_ADDRESS_SPACE`. A limit below :data:`MIN_MEMORY_LIMIT` is refused when the run
starts; a worker that dies under a limit says so in its cell's message
(:func:`memory_limit_note`): a native library (OpenBLAS) that cannot allocate within the limit
ends the worker (exit code 1) instead of raising ``MemoryError``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from .. import plugins
from ..datafiles import cache_dir
from ..errors import SuiteError
from ..suite.sizes import format_size

#: Default hard limit: this multiple of the algorithm-clock timeout ...
WALL_FACTOR = 3.0
#: ... plus this many seconds.
WALL_GRACE = 120.0


@dataclass(frozen=True)
class Limits:
    """Hard limits of one cell.

    Attributes
    ----------
    wall
        Seconds of wall clock after which the worker running the cell is killed (``None``:
        never).
    memory
        Bytes of address space the cell may add to its worker (``None``: unlimited).
    """

    wall: float | None = None
    memory: int | None = None


def default_wall(timeout: float | None) -> float | None:
    """The default hard limit for an algorithm-clock ``timeout`` (``None`` without one)."""
    return None if timeout is None else WALL_FACTOR * timeout + WALL_GRACE


#: Address space the smallest cell adds to a started worker: measured with the smoke suite's
#: first cell (n = 4000, d = 6, k = 2; Linux x86-64, Python 3.11, torch 2.13 CPU, NumPy with
#: OpenBLAS 0.3.31): VmPeak grows by 100 MiB over the worker's VmSize (/proc/self/status) with
#: one or two torch threads; under memory_limit the cell runs at 128 MiB and fails at 96 MiB
#: (OpenBLAS cannot map its 32 MiB buffer and exits the worker with code 1) and at 64 MiB
#: (MemoryError).
CELL_START_ADDRESS_SPACE = 128 * 2**20

#: The smallest ``memory_limit`` a run accepts: twice :data:`CELL_START_ADDRESS_SPACE`, the
#: margin for other libraries, versions and thread counts.
MIN_MEMORY_LIMIT = 2 * CELL_START_ADDRESS_SPACE


def check_memory_limit(size: int | None, source: str = "<suite>") -> None:
    """Refuse a ``memory_limit`` (bytes; ``None``: none) under which no cell can start.

    Parameters
    ----------
    size
        The suite's ``memory_limit`` in bytes.
    source
        The suite file, for the message.

    Raises
    ------
    SuiteError
        ``size`` is below :data:`MIN_MEMORY_LIMIT`; the message names ``memory_limit``, the
        floor and why.
    """
    if size is not None and size < MIN_MEMORY_LIMIT:
        raise SuiteError([("memory_limit", (
            f"{format_size(size)} is below {format_size(MIN_MEMORY_LIMIT)}, the least a cell "
            f"can run under: a cell adds about {format_size(CELL_START_ADDRESS_SPACE)} to its "
            "worker's address space just to start (torch, its data, BLAS buffers); set "
            f"memory_limit to at least {format_size(MIN_MEMORY_LIMIT).replace(' ', '')}"))],
            source)


def memory_limit_note(size: int) -> str:
    """What the message of a cell whose worker died under ``memory_limit`` (``size`` bytes)
    adds: the limit, and that it may be the cause."""
    return (f"under memory_limit {format_size(size)} (RLIMIT_AS): a native library that cannot "
            "allocate within it ends the worker; raise memory_limit if the cell needs more")


def _address_space() -> int | None:
    """Current virtual memory size of this process in bytes (Linux), else ``None``."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def memory_limit_supported() -> bool:
    """Whether :func:`memory_limit` can enforce a limit on this platform."""
    return sys.platform.startswith("linux") and _address_space() is not None


@contextlib.contextmanager
def memory_limit(size: int | None) -> Iterator[None]:
    """Cap the address space this process may grow by ``size`` bytes inside the block.

    Allocations beyond it fail (``MemoryError`` in Python, an allocation error in torch), so the
    cell is recorded ``crashed`` (:mod:`moebench.cell.rows`) and the worker survives for the
    next cell. The previous limit is restored afterwards. A no-op where ``RLIMIT_AS`` is not
    available.
    """
    if size is None or not memory_limit_supported():
        yield
        return
    import resource

    current = _address_space() or 0
    old = resource.getrlimit(resource.RLIMIT_AS)
    soft = current + size
    if old[1] != resource.RLIM_INFINITY:
        soft = min(soft, old[1])
    resource.setrlimit(resource.RLIMIT_AS, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


_worker_start: list[float] = []


def use_persistent_compile_cache() -> str:
    """Point torch.compile's on-disk caches (inductor's FX graph and kernel caches) at
    ``<moebench cache>/torchinductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` is set, so that every
    worker and every later run reuses what one compiled (torch's default lives in the temporary
    folder, which is cleared on reboot). Returns the folder."""
    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "torchinductor"))


def _process_age() -> float | None:
    """Seconds since this process started (Linux), else ``None``."""
    try:
        with open("/proc/self/stat") as fh:
            started = int(fh.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as fh:
            return float(fh.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


#: Caps the cores a run uses (``moebench compare-commits`` gives each of two runs side by side
#: half of them, without pinning either to a core).
CORES_ENV = "MOEBENCH_CORES"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM or container
    allocation, else ``os.cpu_count()``), at most ``$MOEBENCH_CORES`` when that is set."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        cores = max(1, os.cpu_count() or 1)
    cap = os.environ.get(CORES_ENV, "").strip()
    return max(1, min(cores, int(cap))) if cap.isdigit() and int(cap) > 0 else cores


#: Memory a worker needs for small cells: with torch and the plugins imported a process holds
#: about 330 MiB resident (VmRSS after `import moebench, torch, moebench_plugins`, this 2-core
#: machine, torch 2.13 CPU), plus room for a cell's data and buffers.
WORKER_MEMORY = 512 * 2**20


def available_memory() -> int | None:
    """Bytes of memory available to new processes (``MemAvailable`` of ``/proc/meminfo``), or
    ``None`` where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cap_jobs(requested: int) -> tuple[int, str | None]:
    """The worker processes a run on this machine starts for ``--jobs requested``.

    At most one worker per usable core (cells are CPU-bound: a second worker on a core only
    shares it, and each worker needs a torch thread) and at most as many as the available
    memory holds at :data:`WORKER_MEMORY` each.

    Returns
    -------
    tuple
        The number of workers, and a one-line note when it is less than ``requested``
        (``None`` otherwise).
    """
    cores = usable_cores()
    memory = available_memory()
    by_memory = max(1, memory // WORKER_MEMORY) if memory is not None else None
    jobs = min(requested, cores, by_memory or requested)
    if jobs >= requested:
        return requested, None
    why = [f"{cores} usable core(s), one worker each"]
    if by_memory is not None:
        why.append(f"memory for {by_memory} ({format_size(memory)} available, "
                   f"{format_size(WORKER_MEMORY)} per worker)")
    return jobs, f"--jobs {requested} capped at {jobs} worker(s): {'; '.join(why)}"


def worker_threads(jobs: int) -> int:
    """Torch threads per worker: the usable cores shared among ``jobs`` workers (at least one),
    so that ``jobs x threads`` never exceeds the cores."""
    return max(1, usable_cores() // max(1, jobs))


#: Cells whose training inputs hold fewer numbers than this run with one torch thread: there a
#: second thread does not pay for waking it. Measured with the fused native pass
#: (``OMP_WAIT_POLICY=PASSIVE python -m measurements.suite_sizes --d 10 --threads 1|2``, idle
#: 2-core machine, two rounds; measurements/RESULTS.md): joint EM at n = 4,000 takes 1.25-1.31 ms
#: per iteration with one thread and 1.65-1.73 ms with two, equal at n = 10,000 (2.2 ms), while two
#: threads win from n = 20,000 (2.7-3.3 against 3.7 ms) and by 1.7-1.9x at n = 100,000.
SMALL_CELL_ELEMENTS = 150_000


def cell_threads(shape: tuple[int, ...] | None, threads: int) -> int:
    """Torch threads for a cell on the CPU whose training inputs have ``shape``: one below
    :data:`SMALL_CELL_ELEMENTS` numbers, else the worker's ``threads``; ``shape=None`` (not an
    in-memory array) keeps ``threads``."""
    if shape is None or len(shape) != 2:
        return threads
    return 1 if shape[0] * shape[1] < SMALL_CELL_ELEMENTS else threads


def take_worker_start() -> float:
    """Seconds this worker took to start (interpreter, imports, plugins), the first time it is
    asked; 0 afterwards, so that a run's accounting counts each worker's start once."""
    return _worker_start.pop() if _worker_start else 0.0


def worker_init(threads: int) -> None:
    """Start-up of a worker process: ignore Ctrl-C (the parent decides), set threads and load
    the plugins (a plugin failing at import is recorded, as in the parent).

    A terminal's Ctrl-C reaches every process of the foreground group; workers ignore it so
    that the cells in flight can finish within the parent's grace period.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["MOEBENCH_WORKER"] = "1"
    use_persistent_compile_cache()
    import torch

    torch.set_num_threads(max(1, threads))
    plugins.load_plugins()  # once per worker, before any cell's hard limit starts
    age = _process_age()
    if age is not None:
        _worker_start.append(age)
