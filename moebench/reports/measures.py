"""Per-seed measures of a run: what ``moebench compare`` tests and ``moebench history`` plots.

A *configuration* is a cell without its seed (experiment, dataset and algorithm ids and their
parameters, :data:`CONFIG`); its cells differ only by ``repetition``. The statistical unit is
the seed: every successful cell gives **one** value per measure,

- ``time``: the median algorithm time per iteration of that cell, on the CPU clock
  (``cpu_time``, the default: time the algorithm's thread spent computing, which waiting for a
  busy core does not stretch, though a slower core does) or the wall clock (``time``).
  Iteration rows hold cumulative times, so a step is the difference of two recorded rows
  divided by the iterations between them; a cell that recorded fewer than two iterations
  gives its total time over its iterations;
- each metric: its value in the cell's ``final`` row.

Iterations of one cell are not independent samples (they share the data, the initial point and
the machine's state during that cell), so they never count as separate observations.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from .results import SUCCESS, RunResults

#: Columns that identify a cell's configuration across runs (with ``repetition``, a cell).
CONFIG = ["experiment", "dataset", "algorithm", "dataset_params", "algorithm_params"]
#: The name of the time measure.
TIME = "time"
Clock = Literal["cpu", "wall"]
#: The iteration-row column of each clock.
CLOCK_COLUMNS: dict[str, str] = {"cpu": "cpu_time", "wall": "time"}


def clock_available(run: RunResults, clock: Clock) -> bool:
    """Whether ``run`` recorded times on ``clock`` (results written before moebench recorded
    the CPU clock have wall times only)."""
    column = CLOCK_COLUMNS[clock]
    return column in run.frame and bool(run.frame[column].notna().any())


def with_config(rows: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``rows`` with every :data:`CONFIG` column, as text (``""`` where missing)."""
    rows = rows.copy()
    for c in CONFIG:
        if c not in rows:
            rows[c] = ""
    rows[CONFIG] = rows[CONFIG].astype(str)
    return rows


def successful_finals(run: RunResults) -> pd.DataFrame:
    """The ``final`` rows of ``run``'s successful cells, configuration columns as text."""
    finals = run.frame[run.frame["record"] == "final"]
    return with_config(finals[finals["status"].isin(SUCCESS)])


def seed_times(run: RunResults, clock: Clock = "cpu",
               finals: pd.DataFrame | None = None) -> pd.DataFrame:
    """The median time per iteration of every successful cell of ``run``.

    Parameters
    ----------
    run
        A loaded results folder.
    clock
        ``"cpu"`` (CPU time of the thread running the algorithm) or ``"wall"``.
    finals
        :func:`successful_finals` of ``run``, when the caller has it already.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CONFIG`, ``repetition`` and ``value`` (seconds per iteration), one row
        per successful cell.
    """
    column = CLOCK_COLUMNS[clock]
    finals = successful_finals(run) if finals is None else finals
    out = finals[[*CONFIG, "repetition"]].copy()
    if finals.empty or column not in finals:
        return out.assign(value=pd.Series(dtype=float))
    frame = run.frame
    steps = pd.Series(dtype=float)
    if "key" in frame:
        rows = frame[(frame["record"] == "iteration") & frame["key"].isin(finals["key"])]
        rows = rows[["key", "iteration", column]].dropna().sort_values(["key", "iteration"])
        by_cell = rows.groupby("key", sort=False)
        step = by_cell[column].diff() / by_cell["iteration"].diff()
        steps = step[np.isfinite(step) & (step >= 0)].groupby(rows["key"]).median()
    totals = finals[column].astype(float) / finals["iteration"].clip(lower=1).astype(float)
    values = finals["key"].map(steps) if "key" in finals else pd.Series(np.nan, finals.index)
    out["value"] = values.fillna(totals).to_numpy(float)
    return out


def seed_measures(run: RunResults, measures: list[str] | None = None,
                  clock: Clock = "cpu") -> pd.DataFrame:
    """Every measure of every successful cell of ``run``, one value per seed.

    Parameters
    ----------
    run
        A loaded results folder.
    measures
        Metric names and/or :data:`TIME` (default: time and every metric the manifest lists
        for each experiment).
    clock
        The clock of the time measure.

    Returns
    -------
    pandas.DataFrame
        Long format: :data:`CONFIG`, ``repetition``, ``measure``, ``value``.
    """
    parts = []
    finals = successful_finals(run)
    if measures is None or TIME in measures:
        parts.append(seed_times(run, clock, finals).assign(measure=TIME))
    listed = run.manifest.get("metrics") or {}
    for experiment, rows in finals.groupby("experiment", sort=False):
        names = [m for m in (listed.get(experiment) or []) if m != TIME] \
            if measures is None else [m for m in measures if m != TIME]
        for name in names:
            if name in rows:
                values = pd.to_numeric(rows[name], errors="coerce")
                parts.append(rows[[*CONFIG, "repetition"]].assign(measure=name,
                                                                  value=values.to_numpy(float)))
    if not parts:
        return pd.DataFrame(columns=[*CONFIG, "repetition", "measure", "value"])
    return pd.concat(parts, ignore_index=True)[[*CONFIG, "repetition", "measure", "value"]]


def format_seconds(seconds: float | None) -> str:
    """A time with its unit, as asv prints it: ``'812μs'``, ``'1.53ms'``, ``'2.05s'``."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("μs", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale or unit == "ns":
            return f"{seconds / scale:.3g}{unit}"
    return f"{seconds:.3g}s"  # pragma: no cover
