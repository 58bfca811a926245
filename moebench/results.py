"""Reading results folders written by ``moebench run``.

Layout of ``<out>/<suite>/`` (written by :mod:`moebench.execution.store`):

- ``cells.jsonl``: one line per finished cell (its rows), committed as each cell finishes, so
  an interrupted or crashing run loses nothing already computed;
- ``results.parquet``: the tidy table, written at the end (and on interruption): one row per
  recorded iteration (``record == "iteration"``) and one row per cell (``record == "final"``);
- ``manifest.json``: versions, device, git commit, command line, times, counts by status, and
  ``state`` (``running``, ``complete`` or ``interrupted``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import MoebenchError
from .execution.store import (
    ID_COLUMNS,
    MANIFEST_FILE,
    PARTIAL_FILE,
    RESULTS_FILE,
    latest_cells,
    read_cell_lines,
    rows_to_frame,
)

__all__ = ["ID_COLUMNS", "MANIFEST_FILE", "PARTIAL_FILE", "RESULTS_FILE", "STATUSES", "SUCCESS",
           "read_manifest", "read_results", "rows_to_frame", "unsuccessful_cells"]

#: Statuses of a cell; the first three count as a success on leaderboards.
STATUSES = ("done", "max_iter", "timeout", "diverged", "error", "crashed", "skipped")
SUCCESS = ("done", "max_iter", "timeout")


def read_results(directory: str | Path) -> pd.DataFrame:
    """Load a results folder: ``results.parquet``, or the cells of a run that did not finish
    (the last line of each cell key; a partial last line is ignored)."""
    directory = Path(directory)
    table = directory / RESULTS_FILE
    if table.is_file():
        return pd.read_parquet(table)
    cells, _ = read_cell_lines(directory / PARTIAL_FILE)
    if cells:
        return rows_to_frame([r for rows in latest_cells(cells).values() for r in rows])
    raise MoebenchError(
        f"no results in {directory}: expected {RESULTS_FILE} (written by `moebench run`)"
    )


def unsuccessful_cells(results: pd.DataFrame) -> list[tuple[str, str, int]]:
    """``(status, reason, count)`` for the cells that were skipped or failed, one row per
    distinct status and first line of the message, most frequent first."""
    finals = results[(results["record"] == "final") & ~results["status"].isin(SUCCESS)]
    if finals.empty:
        return []
    first = finals["message"].fillna("").astype(str).str.split("\n").str[0]
    counts = finals.assign(reason=first).groupby(["status", "reason"]).size()
    return [(s, r, int(n)) for (s, r), n in counts.sort_values(ascending=False).items()]


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
