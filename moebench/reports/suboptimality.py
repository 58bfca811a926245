"""Suboptimality, benchopt's default view: how far each algorithm's training objective is from
the best value that any algorithm reached on the same dataset and seed, and how long each takes
to come within a tolerance of it.

For a seed ``r`` of a dataset, ``f*_r`` is the best value of the objective (the experiment's
training-objective metric, e.g. ``train_nll``) over every iteration and final row of every
algorithm's successful cells with that seed: all of them fit the same data from the same
initialisation. An algorithm's suboptimality at iteration ``t`` is ``f_r(t) - f*_r`` (``f*_r -
f_r(t)`` for a metric to maximise), zero where it reached the best value itself. It reaches a
tolerance ``tol`` at the first iteration where the suboptimality is at most ``tol * max(1,
|f*_r|)`` (the iteration that sets ``f*_r`` only if the next one stays within it: a run that
ends on the best value would otherwise reach every tolerance at its last step); the time is
its algorithm time there (the clock of the run: it stretches with the
machine's load).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .analysis import CURVE_COLUMNS, Curve, curve_stats
from .results import SUCCESS

#: The column of the rows returned by :func:`suboptimality_rows`.
COLUMN = "suboptimality"
#: Relative tolerances of the time-to-tolerance table.
TOLERANCES = (1e-2, 1e-4, 1e-6)
#: The smallest suboptimality drawn, as a fraction of ``max(1, |f*|)`` (float64 resolution).
FLOOR = 1e-12


@dataclass
class Reach:
    """When one algorithm came within ``tolerance`` of the best value, over seeds."""

    algorithm: str
    tolerance: float
    seeds: int
    reached: int
    median_time: float | None
    median_iteration: float | None


def suboptimality_rows(results: pd.DataFrame, experiment: str, dataset: str, metric: str,
                       direction: str) -> pd.DataFrame:
    """The iteration rows of one dataset's successful cells, with the column :data:`COLUMN`.

    Parameters
    ----------
    results
        A run's rows (``results.parquet``).
    experiment, dataset
        Which experiment and dataset configuration.
    metric
        The training objective (a metric column).
    direction
        ``"min"`` or ``"max"``: which way ``metric`` is better.

    Returns
    -------
    pandas.DataFrame
        Empty when no successful cell recorded ``metric``; otherwise the dataset's rows (every
        status, iteration and final records, so that curves count timeouts and divergences)
        with the columns ``best`` (``f*`` of the row's seed) and :data:`COLUMN` (set on the
        iteration rows of successful cells).
    """
    if metric not in results:
        return results.iloc[0:0]
    columns = [c for c in dict.fromkeys((*CURVE_COLUMNS, metric)) if c in results]
    sel = results.loc[(results["experiment"] == experiment) & (results["dataset"] == dataset),
                      columns]
    ok = sel[sel["status"].isin(SUCCESS)]
    if metric not in ok or not np.isfinite(ok[metric].astype(float)).any():
        return sel.iloc[0:0]
    finite = ok[np.isfinite(ok[metric].astype(float))]
    grouped = finite.groupby("repetition")[metric]
    best = grouped.min() if direction == "min" else grouped.max()
    rows = sel.copy()
    rows["best"] = rows["repetition"].map(best).astype(float)
    gap = rows[metric].astype(float) - rows["best"]
    gap = (gap if direction == "min" else -gap).clip(lower=0.0)
    counted = (rows["record"] == "iteration") & rows["status"].isin(SUCCESS)
    rows[COLUMN] = gap.where(counted)
    return rows


def suboptimality_curves(rows: pd.DataFrame, experiment: str, dataset: str) -> list[Curve]:
    """Per algorithm, the median and 25-75 % band over seeds of the suboptimality against
    iteration and time (:func:`~moebench.reports.analysis.curve_stats` of :data:`COLUMN`)."""
    if rows.empty:
        return []
    return curve_stats(rows, experiment, dataset, COLUMN)


def floor(rows: pd.DataFrame) -> float:
    """Where a suboptimality of zero is drawn on a log axis (which has no zero): a decade below
    the smallest positive suboptimality, and not below :data:`FLOOR` times the largest
    ``max(1, |f*|)`` over seeds."""
    if not len(rows):
        return FLOOR
    best = np.abs(rows["best"].to_numpy(dtype=float))
    scale = max(1.0, float(np.nanmax(best)) if np.isfinite(best).any() else 1.0)
    gaps = rows[COLUMN].to_numpy(dtype=float)
    positive = gaps[np.isfinite(gaps) & (gaps > 0)]
    smallest = 10.0 ** math.floor(math.log10(positive.min()) - 1) if len(positive) else 0.0
    return max(10.0 ** math.floor(math.log10(FLOOR * scale)), smallest)


def time_to_tolerance(rows: pd.DataFrame, tolerances: tuple[float, ...] = TOLERANCES
                      ) -> list[Reach]:
    """Per algorithm and tolerance, how many seeds came within ``tol * max(1, |f*|)`` of the
    best value, and the median over those seeds of the algorithm time and the iteration at
    which each first did. The iteration that sets ``f*`` (a gap of zero by construction)
    counts only when the next iteration stays within the tolerance.

    Parameters
    ----------
    rows
        :func:`suboptimality_rows` of one dataset.
    tolerances
        Relative tolerances.

    Returns
    -------
    list of Reach
        In the order the algorithms appear in ``rows``, tolerances in the given order.
    """
    out: list[Reach] = []
    counted = rows[rows[COLUMN].notna()] if len(rows) else rows
    for algorithm, group in counted.groupby("algorithm", sort=False):
        group = group.sort_values(["repetition", "iteration"], kind="stable")
        rep = group["repetition"].to_numpy()
        gap = group[COLUMN].to_numpy(dtype=float)
        scale = np.maximum(1.0, np.abs(group["best"].to_numpy(dtype=float)))
        times, iterations = (group[c].to_numpy(dtype=float) for c in ("time", "iteration"))
        next_same_seed = np.r_[rep[1:] == rep[:-1], False]
        seeds = int(len(np.unique(rep)))
        for tol in tolerances:
            within = gap <= tol * scale
            stays = np.r_[within[1:], False] & next_same_seed
            # the iteration that sets f* has a gap of 0 by construction: it counts only when
            # the next one stays within the tolerance (a run ending on the best value would
            # otherwise "reach" every tolerance at its last step)
            counts = np.flatnonzero(within & ((gap > 0) | stays))
            first = counts[np.unique(rep[counts], return_index=True)[1]]  # per seed, earliest
            out.append(Reach(str(algorithm), tol, seeds, int(len(first)),
                             float(np.median(times[first])) if len(first) else None,
                             float(np.median(iterations[first])) if len(first) else None))
    return out
