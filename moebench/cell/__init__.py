"""Cells: where a cell runs.

A *cell* is (experiment, dataset variant, algorithm variant, repetition). This package knows
what a cell is and computes; :mod:`moebench.execution` knows where and how cells are executed.

- :mod:`.spec`: :class:`CellSpec` (the picklable description of a cell), its stable key, the
  identifying columns of its rows, and the cells of a resolved suite in order;
- :mod:`.unit`: the data, model and initial point the cells of a unit share
  (:func:`prepare_unit`, :func:`build_model`);
- :mod:`.compute`: :func:`run_cell` / :class:`CellRun`, one algorithm fitted on a prepared unit
  (the callback, the budget, the metrics, the statuses);
- :mod:`.rows`: every row a cell writes (iteration and final rows; killed, crashed and
  out-of-memory rows written by the executors) and their validation.
"""

from .compute import CellRun, run_cell
from .rows import crashed_rows, final_row, killed_rows
from .spec import CellSpec, cell_fields, cell_key, expand_cells
from .unit import PreparedUnit, UnitFailure, build_model, prepare_unit

__all__ = ["CellRun", "CellSpec", "PreparedUnit", "UnitFailure", "build_model", "cell_fields",
           "cell_key", "crashed_rows", "expand_cells", "final_row", "killed_rows",
           "prepare_unit", "run_cell"]
