"""What a worker process runs for one cell.

Workers are persistent (torch is imported once per worker, not per cell). Each keeps the last
unit it prepared, so the algorithms of a unit that land on the same worker share one data load;
a unit's data and initial point depend only on its seeds, so which worker runs a cell never
changes its results.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .cells import CellSpec, final_row
from .limits import Limits, cell_threads, memory_limit
from .outcomes import is_out_of_memory, out_of_memory_message

_cached: tuple[tuple[Any, ...], Any] | None = None


def _prepared(spec: CellSpec):
    """The spec's unit, prepared once per worker (the previous unit is released first), and the
    seconds its preparation took in this call (0 when it was cached)."""
    global _cached
    from ..runner import prepare_unit

    if _cached is not None and _cached[0] == spec.unit:
        return _cached[1], 0.0
    _cached = None
    start = time.perf_counter()
    unit = prepare_unit(spec)
    _cached = (spec.unit, unit)
    return unit, time.perf_counter() - start


def _account(rows: list[dict[str, Any]], data_time: float) -> list[dict[str, Any]]:
    """Add the time of data loading and of this worker's start (first cell only) to the final
    row, for the run's time accounting."""
    from .limits import take_worker_start

    rows[-1]["time_data"] = data_time
    rows[-1]["time_worker_start"] = take_worker_start()
    return rows


@contextmanager
def _threads_for(unit: Any) -> Iterator[int]:
    """Run a cell with :func:`~moebench.execution.limits.cell_threads` torch threads (one for
    small CPU cells), restoring the worker's setting after it; yields the number used."""
    import torch

    before = torch.get_num_threads()
    X = unit.tensors.get("X_train")
    shape = tuple(X.shape) if isinstance(X, torch.Tensor) else None
    wanted = cell_threads(shape, before) if unit.device.torch_device().type == "cpu" else before
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


#: A cell still reporting iterations stops itself (status ``timeout``, rows kept) once this
#: fraction of its hard wall-clock limit has passed, before the supervisor would kill it.
SOFT_WALL = 0.9


def execute_cell(spec: CellSpec, limits: Limits) -> list[dict[str, Any]]:
    """Run one cell in this process under ``limits.memory``; never raises for the plugin.

    Returns
    -------
    list of dict
        The cell's rows: one per reported iteration and a ``final`` row with the status.
    """
    global _cached
    from ..runner import UnitFailure, run_cell

    deadline = None if limits.wall is None else time.monotonic() + SOFT_WALL * limits.wall
    try:
        with memory_limit(limits.memory):
            unit, data_time = _prepared(spec)
            if isinstance(unit, UnitFailure):
                return _account([final_row(spec, unit.status, unit.message, cause=unit.cause)],
                                data_time)
            with _threads_for(unit) as threads:
                rows = run_cell(spec, unit, limits.memory, deadline)
            rows[-1]["threads"] = threads
            return _account(rows, data_time)
    except BaseException as exc:  # SystemExit/KeyboardInterrupt of a plugin: this cell only
        _cached = None
        if is_out_of_memory(exc):
            return [final_row(spec, "crashed", out_of_memory_message(exc, limits.memory))]
        return [final_row(spec, "error", f"{type(exc).__name__}: {exc}")]
