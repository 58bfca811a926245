"""Every row a cell writes, and the validation of every row before it is kept.

A cell's rows are one ``iteration`` row per reported iteration and one ``final`` row with its
status (:mod:`moebench.cell.compute` builds them with :func:`iteration_row` and
:func:`result_row`). The executors write the final rows of cells that never reported themselves:
:func:`killed_rows` (the hard wall-clock limit), :func:`crashed_rows` (the worker died) and
the out-of-memory message. A plugin can report anything through its callback; one bad value
must never cost a run its table: :func:`clean_rows` coerces each value to a type the results
table can hold (``None``, ``bool``, ``int``, ``float``, ``str``) before the store keeps them,
and :func:`rows_to_frame` gives the table its stable column order.
"""

from __future__ import annotations

import math
import numbers
import signal
from typing import Any

import pandas as pd

from ..suite.sizes import format_size
from .spec import CellSpec, cell_fields

_SCALARS = (str, bool, int, float, type(None))

#: Columns that hold text even when a plugin puts a number there.
TEXT_COLUMNS = ("status", "message", "suite", "experiment", "dataset", "algorithm", "record",
                "dataset_name", "algorithm_name", "dataset_params", "algorithm_params", "model",
                "model_params", "key", "cause", "clock")


def as_scalar(value: Any) -> Any:
    """A value the results table can hold: numbers as ``float``/``int``, tensors and numpy
    scalars unwrapped, anything else as its ``str``."""
    if isinstance(value, _SCALARS):
        return value
    item = getattr(value, "item", None)
    size = getattr(value, "size", None)
    numel = getattr(value, "numel", None)
    one = (callable(numel) and numel() == 1) or (isinstance(size, int) and size == 1)
    if callable(item) and one:
        try:
            value = item()
        except (TypeError, ValueError, RuntimeError):
            return str(value)
        if isinstance(value, _SCALARS):
            return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def clean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every value of ``rows`` made storable; text columns as text, metric columns as floats
    (a value that is not a number becomes NaN and the cell's message says so)."""
    out: list[dict[str, Any]] = []
    bad: set[str] = set()
    for row in rows:
        clean: dict[str, Any] = {}
        for name, value in row.items():
            value = as_scalar(value)
            if name in TEXT_COLUMNS:
                clean[name] = None if value is None else str(value)
            elif name in ("iteration", "repetition", "seed", "data_seed", "init_seed"):
                clean[name] = value if isinstance(value, int) and not isinstance(value, bool) \
                    else _int_or_none(value)
            elif isinstance(value, bool | str):
                if isinstance(value, str):
                    bad.add(name)
                clean[name] = math.nan if isinstance(value, str) else float(value)
            else:
                clean[name] = value
        out.append(clean)
    if bad and out:
        final = out[-1]
        note = f"non-numeric values of {', '.join(sorted(bad))} stored as NaN"
        final["message"] = f"{final['message']}; {note}" if final.get("message") else note
    return out


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


#: A cell's final row is flagged ``wall_over_budget`` when its algorithm's wall time exceeds
#: this multiple of ``budget.timeout`` (a CPU-clock budget absorbs a machine loaded up to about
#: this factor; the default hard limit's factor is the same) ...
WALL_OVER_FACTOR = 3.0
#: ... and exceeds it by more than this many seconds (a tiny budget is not flagged for a moment
#: of scheduling jitter).
WALL_OVER_GRACE = 1.0


def wall_over_budget(wall: float, timeout: float | None) -> bool:
    """Whether ``wall`` seconds of an algorithm are far beyond its ``budget.timeout``: more
    than :data:`WALL_OVER_FACTOR` times it and more than :data:`WALL_OVER_GRACE` seconds over
    it (never without a timeout).

    The budget counts on the CPU clock by default: an algorithm that sleeps, waits for I/O or
    another process, or keeps running after it was told to stop, spends wall time that no
    timeout stops before the hard wall-clock limit (``budget.wall_timeout``).
    """
    if timeout is None or not math.isfinite(wall):
        return False
    return wall > WALL_OVER_FACTOR * timeout and wall - timeout > WALL_OVER_GRACE


def iteration_row(fields: dict[str, Any], iteration: int, *, time: float, cpu_time: float,
                  objective: float | None, values: dict[str, Any],
                  extras: dict[str, Any]) -> dict[str, Any]:
    """The row of one reported iteration: the cell's columns, the clocks, the objective, the
    metrics and the algorithm's extras (``extra.<name>``)."""
    return {**fields, "record": "iteration", "iteration": iteration, "time": time,
            "cpu_time": cpu_time, "objective": objective, **values, **extras}


def result_row(fields: dict[str, Any], values: dict[str, Any], *, status: str,
               message: str | None = None, iteration: int = 0, time: float = 0.0,
               **extra: Any) -> dict[str, Any]:
    """The ``final`` row of a cell: its columns, the metrics of its final parameters, its
    status and message, the last iteration, its time and any further columns."""
    return {**fields, "record": "final", **values, "iteration": iteration, "time": time,
            "status": status, "message": message, **extra}


def final_row(spec: CellSpec, status: str, message: str | None, **values: Any) -> dict[str, Any]:
    """The ``final`` row of a cell that produced nothing else (skipped, killed, crashed)."""
    return result_row(cell_fields(spec), {}, status=status, message=message, **values)


def with_accounting(rows: list[dict[str, Any]], data_time: float,
                    worker_start: float) -> list[dict[str, Any]]:
    """The time of data loading and of the worker's start added to the final row, for the
    run's time accounting."""
    rows[-1]["time_data"] = data_time
    rows[-1]["time_worker_start"] = worker_start
    return rows


def killed_rows(spec: CellSpec, wall: float) -> list[dict[str, Any]]:
    """The cell's worker was killed at the hard wall-clock limit (flagged
    ``wall_over_budget`` when that limit is far beyond the budget's timeout)."""
    timeout = spec.experiment.budget_for(spec.algorithm).timeout
    return [final_row(spec, "timeout",
                      f"killed after {wall:.4g} s of wall clock (hard limit): the algorithm "
                      "did not report an iteration in time; raise budget.wall_timeout or "
                      "--timeout if it needs longer", time=float(wall),
                      wall_over_budget=wall_over_budget(float(wall), timeout))]


def describe_exit(exitcode: int | None) -> str:
    """``'signal SIGSEGV (Segmentation fault)'`` or ``'exit code 7'``."""
    if exitcode is None:
        return "an unknown cause"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
            text = f"signal {sig.name} ({signal.strsignal(sig) or sig.name})"
        except ValueError:
            return f"signal {-exitcode}"
        if sig == signal.SIGKILL:
            text += ", as the kernel's out-of-memory killer does"
        return text
    return f"exit code {exitcode}"


def crashed_rows(spec: CellSpec, exitcode: int | None, detail: str = "") -> list[dict[str, Any]]:
    """The worker process running the cell died."""
    message = f"the worker process running this cell died: {describe_exit(exitcode)}"
    if detail:
        message += f" ({detail})"
    return [final_row(spec, "crashed", message, exitcode=exitcode)]


def is_out_of_memory(exc: BaseException) -> bool:
    """``MemoryError``, or a torch allocation failure (a ``RuntimeError`` saying so)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError)
        and any(s in text for s in ("can't allocate memory", "cannot allocate memory",
                                    "out of memory", "not enough memory"))
    )


def out_of_memory_message(exc: BaseException, limit: int | None) -> str:
    """Message of a cell that ran out of memory (``MemoryError`` or a failed allocation)."""
    where = f" (memory_limit {format_size(limit)})" if limit else ""
    return f"out of memory{where}: {type(exc).__name__}: {str(exc)[:300]}"


ID_COLUMNS = [
    "suite",
    "experiment",
    "record",
    "dataset",
    "algorithm",
    "repetition",
    "iteration",
    "time",
    "status",
    "message",
    "dataset_name",
    "dataset_params",
    "model",
    "model_params",
    "algorithm_name",
    "algorithm_params",
    "seed",
    "data_seed",
    "init_seed",
    "key",
    "objective",
]


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows to a DataFrame with a stable column order (ids first, metrics last)."""
    frame = pd.DataFrame(rows)
    first = [c for c in ID_COLUMNS if c in frame.columns]
    rest = sorted(c for c in frame.columns if c not in ID_COLUMNS)
    return frame[first + rest]
