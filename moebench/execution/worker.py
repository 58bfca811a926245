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

import torch

from ..cell.compute import run_cell
from ..cell.rows import final_row, is_out_of_memory, out_of_memory_message, with_accounting
from ..cell.spec import CellSpec
from ..cell.unit import PreparedUnit, UnitFailure, prepare_unit
from ..errors import describe_error
from .heartbeat import Heartbeat
from .limits import Limits, cell_threads, memory_limit, take_worker_start

_cached: tuple[tuple[Any, ...], PreparedUnit | UnitFailure] | None = None


def _prepared(spec: CellSpec) -> tuple[PreparedUnit | UnitFailure, float]:
    """The spec's unit, prepared once per worker (the previous unit is released first), and the
    seconds its preparation took in this call (0 when it was cached)."""
    global _cached
    if _cached is not None and _cached[0] == spec.unit:
        return _cached[1], 0.0
    _cached = None
    start = time.perf_counter()
    unit = prepare_unit(spec)
    _cached = (spec.unit, unit)
    return unit, time.perf_counter() - start


@contextmanager
def _threads_for(unit: PreparedUnit) -> Iterator[int]:
    """Run a cell with :func:`~moebench.execution.limits.cell_threads` torch threads (one for
    small CPU cells), restoring the worker's setting after it; yields the number used."""
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


def execute_cell(spec: CellSpec, limits: Limits,
                 heartbeat: str | None = None) -> list[dict[str, Any]]:
    """Run one cell in this process under ``limits.memory``; never raises for the plugin.

    Parameters
    ----------
    spec, limits
        The cell and its hard limits.
    heartbeat
        The cell's heartbeat file (:mod:`.heartbeat`): written while the cell runs, removed
        when it ends; ``None``: none.

    Returns
    -------
    list of dict
        The cell's rows: one per reported iteration and a ``final`` row with the status.
    """
    global _cached
    deadline = None if limits.wall is None else time.monotonic() + SOFT_WALL * limits.wall
    beats = Heartbeat(heartbeat, spec, limits.wall)
    try:
        with memory_limit(limits.memory):
            unit, data_time = _prepared(spec)
            if isinstance(unit, UnitFailure):
                return with_accounting(
                    [final_row(spec, unit.status, unit.message, cause=unit.cause)], data_time,
                    take_worker_start())
            with _threads_for(unit) as threads:
                rows = run_cell(spec, unit, limits.memory, deadline, beats.beat)
            rows[-1]["threads"] = threads
            return with_accounting(rows, data_time, take_worker_start())
    except BaseException as exc:  # SystemExit/KeyboardInterrupt of a plugin: this cell only
        _cached = None
        if is_out_of_memory(exc):
            return [final_row(spec, "crashed", out_of_memory_message(exc, limits.memory))]
        return [final_row(spec, "error", describe_error(exc))]
    finally:
        beats.close()
