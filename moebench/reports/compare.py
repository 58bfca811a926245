"""``moebench compare RUN_A RUN_B``: did a change make an algorithm slower or worse?

Cells are matched by their configuration (experiment, dataset and algorithm ids and their
parameters), not by row order or cell key (keys also hash versions, which a change bumps), and
seeds are paired by repetition: both runs used the same data and initial point for a given
(configuration, repetition). For each configuration present in both runs:

- **time**: the ratio B / A of the median algorithm time per iteration over seeds, with a paired
  Wilcoxon signed-rank test over the (repetition, iteration) pairs of per-iteration times
  (over the seeds' total times when iterations are not recorded);
- **each metric**: the medians over seeds in A and B and the change, with a paired Wilcoxon test
  over the seeds;
- **status**: fewer successful cells in B than in A is a regression.

A result is *worse* (or *better*) when it moved beyond ``factor`` in the bad (good) direction
(time: ratio above ``factor`` or below ``1 / factor``; a metric: a change of more than
``factor - 1`` times its magnitude in A) **and** the test is significant at ``alpha``; otherwise
*unchanged*. Configurations found in one run only are listed as such, like
``asv compare --split``. Which way a metric is better comes from the directions recorded with
the runs (A's, else B's), never from the installed plugins.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .results import SUCCESS, RunResults, metric_direction

#: Columns that identify a cell's configuration across runs (with ``repetition``, a cell).
CONFIG = ["experiment", "dataset", "algorithm", "dataset_params", "algorithm_params"]
ORDER = ("worse", "better", "unchanged", "only in A", "only in B")
#: Metric differences below this are never a change (rounding of converged runs).
ABS_TOL = 1e-9


@dataclass
class Change:
    """One line of a comparison."""

    verdict: str
    experiment: str
    dataset: str
    algorithm: str
    measure: str
    a: float | None = None
    b: float | None = None
    ratio: float | None = None
    p_value: float | None = None
    pairs: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def _wilcoxon(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p-value of the paired Wilcoxon signed-rank test (1.0 without differences)."""
    from scipy import stats

    d = np.asarray(x, float) - np.asarray(y, float)
    d = d[np.isfinite(d)]
    if len(d) == 0 or np.all(d == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(stats.wilcoxon(d).pvalue)
        except ValueError:
            return 1.0


def _config_groups(results: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    finals = results[results["record"] == "final"].copy()
    for c in CONFIG:
        if c not in finals:
            finals[c] = ""
    finals[CONFIG] = finals[CONFIG].astype(str)
    return {tuple(k): g for k, g in finals.groupby(CONFIG, sort=False)}


def _iteration_times(results: pd.DataFrame, key: tuple) -> pd.Series:
    """Per-iteration algorithm time of one configuration, indexed by (repetition, iteration)."""
    rows = results[results["record"] == "iteration"]
    for c, v in zip(CONFIG, key, strict=True):
        if c in rows:
            rows = rows[rows[c].astype(str) == v]
    rows = rows[rows["status"].isin(SUCCESS)].sort_values(["repetition", "iteration"])
    if rows.empty:
        return pd.Series(dtype=float)
    steps = rows.groupby("repetition")["time"].diff()
    out = pd.Series(steps.to_numpy(), index=pd.MultiIndex.from_arrays(
        [rows["repetition"].to_numpy(), rows["iteration"].to_numpy()]))
    return out.dropna()


def _metrics(run: RunResults, experiment: str) -> list[str]:
    listed = (run.manifest.get("metrics") or {}).get(experiment)
    if listed:
        return [m for m in listed if m in run.frame]
    return []


def compare_runs(run_a: RunResults | str | Path, run_b: RunResults | str | Path,
                 factor: float = 1.1, metrics: list[str] | None = None,
                 alpha: float = 0.05) -> list[Change]:
    """Compare two results folders (see the module docstring).

    Parameters
    ----------
    run_a, run_b
        Results folders, loaded or their paths (each loaded once): A is the base, B the
        change.
    factor
        How much worse (or better) a measure must get to count, e.g. ``1.1``: 10 %.
    metrics
        Measures to compare: metric names and/or ``"time"`` (default: time and every metric
        of each experiment).
    alpha
        Significance level of the paired tests.

    Returns
    -------
    list[Change]
        Sorted worse, better, unchanged, only in A, only in B; within a group, by how far the
        measure moved.
    """
    run_a, run_b = RunResults.of(run_a), RunResults.of(run_b)
    res_a, res_b = run_a.frame, run_b.frame
    directions = {**run_b.directions, **run_a.directions}
    groups_a, groups_b = _config_groups(res_a), _config_groups(res_b)
    changes: list[Change] = []
    for key in groups_a.keys() - groups_b.keys():
        changes.append(Change("only in A", key[0], key[1], key[2], "cells",
                              pairs=len(groups_a[key])))
    for key in groups_b.keys() - groups_a.keys():
        changes.append(Change("only in B", key[0], key[1], key[2], "cells",
                              pairs=len(groups_b[key])))
    for key in [k for k in groups_a if k in groups_b]:
        exp, dataset, algorithm = key[:3]
        a, b = groups_a[key], groups_b[key]
        ok_a, ok_b = a[a["status"].isin(SUCCESS)], b[b["status"].isin(SUCCESS)]
        if len(ok_b) < len(ok_a) or len(ok_b) > len(ok_a):
            worse = len(ok_b) < len(ok_a)
            statuses = ", ".join(f"{s}: {n}" for s, n in b["status"].value_counts().items())
            changes.append(Change("worse" if worse else "better", exp, dataset, algorithm,
                                  "successful cells", float(len(ok_a)), float(len(ok_b)),
                                  note=f"B: {statuses}"))
        paired = pd.merge(ok_a, ok_b, on="repetition", how="inner", suffixes=("_a", "_b"))
        wanted = metrics or ["time", *_metrics(run_a, exp)]
        for measure in wanted:
            if measure == "time":
                changes.append(_time_change(res_a, res_b, key, paired, factor, alpha))
            elif f"{measure}_a" in paired and f"{measure}_b" in paired:
                changes.append(_metric_change(key, measure, paired, factor, alpha,
                                              directions))
    rank = {v: i for i, v in enumerate(ORDER)}
    changes.sort(key=lambda c: (rank[c.verdict], -_severity(c), c.experiment, c.dataset,
                                c.algorithm, c.measure))
    return changes


def _severity(c: Change) -> float:
    if c.ratio is None or not math.isfinite(c.ratio) or c.ratio <= 0:
        return 0.0
    return abs(math.log(c.ratio))


def _time_change(res_a: pd.DataFrame, res_b: pd.DataFrame, key: tuple, paired: pd.DataFrame,
                 factor: float, alpha: float) -> Change:
    exp, dataset, algorithm = key[:3]
    steps_a, steps_b = _iteration_times(res_a, key), _iteration_times(res_b, key)
    both = steps_a.index.intersection(steps_b.index)
    if len(both) >= 6:
        x, y = steps_a.loc[both].to_numpy(), steps_b.loc[both].to_numpy()
        ma, mb = float(np.median(x)), float(np.median(y))
        p, n, what = _wilcoxon(y, x), len(both), "time per iteration"
    else:
        x, y = paired["time_a"].to_numpy(float), paired["time_b"].to_numpy(float)
        if not len(x):
            return Change("unchanged", exp, dataset, algorithm, "time", note="no paired seeds")
        ma, mb = float(np.median(x)), float(np.median(y))
        p, n, what = _wilcoxon(y, x), len(x), "time per cell"
    ratio = mb / ma if ma > 0 else (math.inf if mb > 0 else 1.0)
    significant = p < alpha
    verdict = "unchanged"
    if significant and ratio > factor:
        verdict = "worse"
    elif significant and ratio < 1 / factor:
        verdict = "better"
    return Change(verdict, exp, dataset, algorithm, what, ma, mb, ratio, p, n)


def _metric_change(key: tuple, metric: str, paired: pd.DataFrame, factor: float,
                   alpha: float, directions: dict[str, str]) -> Change:
    exp, dataset, algorithm = key[:3]
    x = paired[f"{metric}_a"].to_numpy(float)
    y = paired[f"{metric}_b"].to_numpy(float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if not len(x):
        return Change("unchanged", exp, dataset, algorithm, metric, note="no paired values")
    ma, mb = float(np.median(x)), float(np.median(y))
    sign = 1.0 if metric_direction(directions, metric) == "min" else -1.0
    worse_by = sign * (mb - ma)  # > 0: B is worse
    bound = max((factor - 1.0) * abs(ma), ABS_TOL)
    p = _wilcoxon(y, x)
    ratio = mb / ma if ma != 0 else (1.0 if mb == 0 else math.inf)
    verdict = "unchanged"
    if p < alpha and worse_by > bound:
        verdict = "worse"
    elif p < alpha and -worse_by > bound:
        verdict = "better"
    return Change(verdict, exp, dataset, algorithm, metric, ma, mb, ratio, p, len(x))


def regressions(changes: list[Change]) -> list[Change]:
    """The changes that make ``--fail-on-regression`` exit 1."""
    return [c for c in changes if c.verdict == "worse"]
