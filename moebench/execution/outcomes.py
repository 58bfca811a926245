"""Outcomes the executors record themselves, and the validation of every row before it is kept.

A plugin can report anything through its callback; one bad value must never cost a run its
table. :func:`clean_rows` coerces each value of a cell's rows to a type the results table can
hold (``None``, ``bool``, ``int``, ``float``, ``str``) before the store keeps them.
"""

from __future__ import annotations

import math
import numbers
import signal
from typing import Any

from .cells import CellSpec, final_row
from .limits import format_size

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


def killed_rows(spec: CellSpec, wall: float) -> list[dict[str, Any]]:
    """The cell's worker was killed at the hard wall-clock limit."""
    return [final_row(spec, "timeout",
                      f"killed after {wall:.4g} s of wall clock (hard limit): the algorithm "
                      "did not report an iteration in time; raise budget.wall_timeout or "
                      "--timeout if it needs longer", time=float(wall))]


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
