"""What the reports compute rather than draw: verdicts against the papers' values and claims,
and convergence-curve statistics (median and quantile bands over seeds, axis ranges).

Which way a metric is better always comes from the directions recorded with the results.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .results import SUCCESS, metric_direction

#: Claims whose two means differ by less than this fraction are reported as a tie.
TIE = 1e-3


def final_values(results: pd.DataFrame, experiment: str, dataset: str, algorithm: str,
                 metric: str, iteration: int | None = None) -> np.ndarray:
    """A metric over seeds: the final value, or the value at ``iteration`` (carried forward
    for runs that stopped earlier), of successful cells."""
    sel = results[(results["experiment"] == experiment) & (results["dataset"] == dataset)
                  & (results["algorithm"] == algorithm) & results["status"].isin(SUCCESS)]
    if metric not in sel:
        return np.array([])
    if iteration is None:
        values = sel[sel["record"] == "final"][metric]
    else:
        iters = sel[(sel["record"] == "iteration") & (sel["iteration"] <= iteration)]
        values = iters.sort_values("iteration").groupby("repetition")[metric].last()
    values = values.astype(float).to_numpy()
    return values[np.isfinite(values)]


def by_iteration(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """``column`` as a table iteration x repetition (the mean where a pair repeats; pairs
    without a value, and repetitions or iterations with none, left out): what
    ``rows.pivot_table(index="iteration", columns="repetition", values=column)`` gives, at a
    fraction of its cost (the report builds hundreds of these)."""
    present = rows.loc[rows[column].notna(), ["iteration", "repetition", column]]
    return present.groupby(["iteration", "repetition"])[column].mean().unstack("repetition")


def curves(results: pd.DataFrame, experiment: str, dataset: str, metric: str
           ) -> dict[str, pd.DataFrame]:
    """Per algorithm, a table iteration x repetition of ``metric``; a run that stopped early
    keeps its last value (it has converged)."""
    sel = results[(results["experiment"] == experiment) & (results["dataset"] == dataset)
                  & (results["record"] == "iteration") & results["status"].isin(SUCCESS)]
    out = {}
    for algorithm, group in sel.groupby("algorithm", sort=False):
        if metric not in group or group[metric].isna().all():
            continue
        table = by_iteration(group, metric)
        out[algorithm] = table.ffill()
    return out


#: Confidence level of the interval over seeds that verdicts compare with the paper's.
CONFIDENCE = 0.95


def seed_interval(values: np.ndarray, level: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t confidence interval of the mean over seeds (std with ``ddof=1``).

    One seed gives the point itself (no spread can be estimated).
    """
    values = np.asarray(values, dtype=float)
    m = float(values.mean())
    if len(values) < 2:
        return m, m
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)
                 * values.std(ddof=1) / math.sqrt(len(values)))
    return m - half, m + half


def paper_interval(paper: float, paper_std: float | None) -> tuple[float, float]:
    """The paper's interval: its mean ± its std (± 5 % of the mean when it gives none)."""
    tolerance = paper_std if paper_std else 0.05 * abs(paper)
    return paper - tolerance, paper + tolerance


def verdict(values: np.ndarray | float, paper: float, paper_std: float | None,
            direction: str) -> str:
    """Compare moebench's seeds with a paper's number.

    The rule: the 95 % Student-t confidence interval of moebench's mean over seeds
    (:func:`seed_interval`) against the paper's interval (:func:`paper_interval`). When they
    overlap the result is ``consistent``; otherwise ``above`` or ``below`` the paper, with
    ``(better)`` or ``(worse)`` in the metric's ``direction`` (``"min"`` or ``"max"``).

    Parameters
    ----------
    values
        The metric over seeds (a single float counts as one seed).
    paper, paper_std
        The paper's mean and standard deviation (``None`` when not given).
    direction
        ``"min"`` when lower is better, else ``"max"``.

    Returns
    -------
    str
        ``consistent``, ``above (better)``, ``above (worse)``, ``below (better)`` or
        ``below (worse)``.
    """
    values = np.atleast_1d(np.asarray(values, dtype=float))
    lo, hi = seed_interval(values)
    plo, phi = paper_interval(paper, paper_std)
    if hi >= plo and lo <= phi:
        return "consistent"
    above = lo > phi
    good = above == (direction == "max")
    return f"{'above' if above else 'below'} ({'better' if good else 'worse'})"


VERDICT_RULE = (
    "Verdicts compare the 95 % confidence interval of moebench's mean over seeds (Student t, "
    "std with ddof = 1) with the paper's interval (its mean ± its std; ± 5 % of the mean when "
    "the paper gives no std): *consistent* when they overlap, otherwise *above* or *below* the "
    "paper, *(better)* or *(worse)* in the metric's direction. Elsewhere, ± is the standard "
    "deviation over seeds with ddof = 0 (the population std of the seeds run). Claims compare "
    "means over seeds (a *tie* when they differ by less than 0.1 %); a claim judged on cells "
    "that the timeout cut short, or that stopped before the claim's iteration, says so."
)


def reference_rows(exp: dict[str, Any], results: pd.DataFrame,
                   directions: Mapping[str, str]) -> list[dict[str, Any]]:
    """The paper's values of an experiment beside moebench's, one dict per reference value.

    ``directions``: which way each metric is better, as recorded with the results.

    Keys: ``dataset``, ``algorithm``, ``metric``, ``iteration``, ``paper_mean``,
    ``paper_std``, ``values`` (the metric over seeds), ``mean``, ``std`` (ddof 0),
    ``median``, ``min``, ``max``, ``ci`` (95 % interval of the mean) and ``verdict``
    (``None`` when nothing was measured).
    """
    ref = exp.get("reference") or {}
    out = []
    for v in ref.get("values") or []:
        vals = final_values(results, exp["name"], v["dataset"], v["algorithm"], v["metric"],
                            v.get("iteration"))
        row: dict[str, Any] = {
            "dataset": v["dataset"], "algorithm": v["algorithm"], "metric": v["metric"],
            "iteration": v.get("iteration"), "paper_mean": v["mean"],
            "paper_std": v.get("std"), "values": vals, "verdict": None,
        }
        if len(vals):
            row.update(mean=float(vals.mean()), std=float(vals.std()),
                       median=float(np.median(vals)), min=float(vals.min()),
                       max=float(vals.max()), ci=seed_interval(vals),
                       verdict=verdict(vals, v["mean"], v.get("std"),
                                       metric_direction(directions, v["metric"])))
        out.append(row)
    return out


def _cut_short(results: pd.DataFrame, experiment: str, dataset: str, algorithm: str,
               iteration: int | None) -> int:
    """Cells of an algorithm that the timeout cut short (or, for a claim at ``iteration``,
    that stopped before it without converging)."""
    finals = results[(results["experiment"] == experiment) & (results["dataset"] == dataset)
                     & (results["algorithm"] == algorithm) & (results["record"] == "final")]
    short = finals["status"].eq("timeout")
    if iteration is not None:
        short |= finals["status"].ne("done") & (finals["iteration"] < iteration)
    return int(short.sum())


def claim_rows(exp: dict[str, Any], results: pd.DataFrame,
               directions: Mapping[str, str]) -> list[dict[str, Any]]:
    """The paper's claims of an experiment checked per dataset, one dict per (claim, dataset).

    ``directions``: which way each metric is better, as recorded with the results.

    Keys: ``text``, ``dataset``, ``metric``, ``iteration``, ``better``, ``than``,
    ``mean_better``, ``mean_than`` (``None`` when not run), ``verdict`` (``holds``,
    ``does not hold``, ``tie`` or ``not run``) and ``cut_short`` (cells cut short by the
    timeout or stopped before the claim's iteration).
    """
    ref = exp.get("reference") or {}
    out = []
    for c in ref.get("claims") or []:
        for dataset in exp["datasets"]:
            a = final_values(results, exp["name"], dataset, c["better"], c["metric"],
                             c.get("iteration"))
            b = final_values(results, exp["name"], dataset, c["than"], c["metric"],
                             c.get("iteration"))
            row: dict[str, Any] = {"text": c["text"], "dataset": dataset, "metric": c["metric"],
                                   "iteration": c.get("iteration"), "better": c["better"],
                                   "than": c["than"], "mean_better": None, "mean_than": None,
                                   "verdict": "not run", "cut_short": 0}
            if len(a) and len(b):
                ma, mb = float(a.mean()), float(b.mean())
                lower = metric_direction(directions, c["metric"]) == "min"
                wins = ma < mb if lower else ma > mb
                tie = abs(ma - mb) <= TIE * max(abs(ma), abs(mb))
                row.update(mean_better=ma, mean_than=mb,
                           verdict="tie" if tie else "holds" if wins else "does not hold",
                           cut_short=sum(_cut_short(results, exp["name"], dataset, alg,
                                                    c.get("iteration"))
                                         for alg in (c["better"], c["than"])))
            out.append(row)
    return out


@dataclass
class Curve:
    """One algorithm's convergence over seeds: median and 25-75 % quantiles per iteration.

    ``time`` is the median over seeds of the algorithm time at each iteration; ``timeouts``,
    ``diverged`` count the seeds that ended so (diverged seeds are not in the band).
    """

    algorithm: str
    iteration: np.ndarray
    time: np.ndarray
    median: np.ndarray
    q25: np.ndarray
    q75: np.ndarray
    seeds: int
    timeouts: int = 0
    diverged: int = 0
    off_scale: bool = False


def same_curves(curves: list[Curve]) -> dict[str, str]:
    """Algorithm -> an earlier algorithm whose median curve it repeats exactly (same
    iterations, same values to 1e-12): drawn on top of each other, one would hide."""
    found: dict[str, str] = {}
    for i, c in enumerate(curves):
        for earlier in curves[:i]:
            if earlier.algorithm in found or not len(c.iteration) \
                    or c.iteration.shape != earlier.iteration.shape:
                continue
            if np.array_equal(c.iteration, earlier.iteration) and np.allclose(
                    c.median, earlier.median, rtol=1e-12, atol=0.0, equal_nan=True):
                found[c.algorithm] = earlier.algorithm
                break
    return found


def curve_label(c: Curve, same_as: str | None = None) -> str:
    """The legend entry of a curve, with its timeouts, divergent seeds, "off scale" and the
    curve it repeats."""
    notes = [f"same as {same_as}"] if same_as else []
    if c.timeouts:
        notes.append(f"{c.timeouts} timeout")
    if c.diverged:
        drawn = "not in the band" if len(c.iteration) else "not drawn"
        notes.append(f"{c.diverged} diverged, {drawn}")
    if c.off_scale:
        notes.append("off scale")
    return c.algorithm + (f" ({'; '.join(notes)})" if notes else "")


#: The columns of the results that :func:`curve_stats` reads (besides the metric).
CURVE_COLUMNS = ("experiment", "dataset", "algorithm", "repetition", "iteration", "record",
                 "status", "time")


def curve_stats(results: pd.DataFrame, experiment: str, dataset: str, metric: str
                ) -> list[Curve]:
    """Per algorithm, the :class:`Curve` of ``metric`` against iterations (and time).

    Successful cells only (``done``, ``max_iter``, ``timeout``); a seed that stopped early
    keeps its last value (it has converged, or its budget ran out).
    """
    # the columns a curve reads only: taking every (Arrow) column of the rows costs more than
    # the curves themselves
    columns = [c for c in dict.fromkeys((*CURVE_COLUMNS, metric)) if c in results]
    sel = results.loc[(results["experiment"] == experiment) & (results["dataset"] == dataset),
                      columns]
    rows = sel[sel["record"] == "iteration"]
    finals = sel[sel["record"] == "final"]
    out = []
    for algorithm, group in rows.groupby("algorithm", sort=False):
        fin = finals[finals["algorithm"] == algorithm]
        group = group[group["status"].isin(SUCCESS)]
        if metric not in group or group[metric].isna().all():
            continue
        values = by_iteration(group, metric).ffill()
        times = by_iteration(group, "time").ffill()
        arr = values.to_numpy(dtype=float)
        arr = np.where(np.isfinite(arr), arr, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(arr, axis=1)
            q25, q75 = np.nanquantile(arr, 0.25, axis=1), np.nanquantile(arr, 0.75, axis=1)
            t = np.nanmedian(times.to_numpy(dtype=float), axis=1)
        out.append(Curve(str(algorithm), values.index.to_numpy(), t, med, q25, q75,
                         int(values.shape[1]), int(fin["status"].eq("timeout").sum()),
                         int(fin["status"].eq("diverged").sum())))
    shown = {c.algorithm for c in out}
    empty = np.array([], dtype=float)
    for algorithm, fin in finals.groupby("algorithm", sort=False):
        diverged = int(fin["status"].eq("diverged").sum())
        if str(algorithm) not in shown and diverged:  # named in the legend, not drawn
            out.append(Curve(str(algorithm), empty, empty, empty, empty, empty, 0,
                             diverged=diverged))
    return out


def use_log(curves: list[Curve], requested: bool) -> bool:
    """A log y axis when the figure asks for one, or when every value is positive and they
    span more than three decades; never with a value <= 0."""
    lows = [np.nanmin(c.q25) for c in curves if np.isfinite(c.q25).any()]
    highs = [np.nanmax(c.q75) for c in curves if np.isfinite(c.q75).any()]
    if not lows or min(lows) <= 0:
        return False
    return requested or max(highs) / min(lows) > 1e3


def y_range(curves: list[Curve], log: bool, direction: str) -> tuple[float, float] | None:
    """Clip the y axis so that a run that blows up does not flatten the others.

    The top (for a metric to minimise; the bottom for one to maximise) is bounded by the
    worst value at the initial point over algorithms, with a margin; curves beyond it are
    marked ``off_scale``. ``None``: no clipping needed.
    """
    starts = [c.median[0] for c in curves if len(c.median) and np.isfinite(c.median[0])]
    lows = [np.nanmin(c.q25) for c in curves if np.isfinite(c.q25).any()]
    highs = [np.nanmax(c.q75) for c in curves if np.isfinite(c.q75).any()]
    if not starts or not lows:
        return None
    lo, hi = min(lows), max(highs)
    if direction == "min":
        cap = max(starts)
        span = (cap - lo) if not log else 0.0
        cap = cap * 3 if log else cap + 0.5 * max(span, abs(cap) * 0.1, 1e-12)
        if hi <= cap:
            return None
        for c in curves:
            c.off_scale = bool(np.nanmax(c.q75) > cap)
        return lo, cap
    floor = min(starts)
    span = hi - floor
    floor = floor / 3 if log else floor - 0.5 * max(span, abs(floor) * 0.1, 1e-12)
    if lo >= floor:
        return None
    for c in curves:
        c.off_scale = bool(np.nanmin(c.q25) < floor)
    return floor, hi


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def reproduction_headline(experiments: list[dict[str, Any]], results: pd.DataFrame,
                          directions: Mapping[str, str]) -> str | None:
    """The one line a researcher wants first: how many of the papers' values and claims the
    run reproduced.

    Parameters
    ----------
    experiments
        The experiments as the manifest records them (with their ``reference``).
    results
        The run's table.
    directions
        Which way each metric is better, as recorded with the results.

    Returns
    -------
    str or None
        E.g. ``"13 of 14 paper values consistent, 1 above (better); 39 of 54 claims hold,
        7 ties, 8 do not"``; ``None`` when no experiment has a reference.
    """
    values: dict[str, int] = {}
    claims: dict[str, int] = {}
    for exp in experiments:
        if not exp.get("reference"):
            continue
        for row in reference_rows(exp, results, directions):
            key = row["verdict"] or "not measured"
            values[key] = values.get(key, 0) + 1
        for row in claim_rows(exp, results, directions):
            claims[row["verdict"]] = claims.get(row["verdict"], 0) + 1
    parts = []
    if values:
        total = sum(values.values())
        others = [f"{n} {v}" for v, n in sorted(values.items(), key=lambda kv: -kv[1])
                  if v != "consistent"]
        parts.append(", ".join([f"{values.get('consistent', 0)} of {total} paper values "
                                "consistent", *others]))
    if claims:
        words = {"tie": lambda n: _plural(n, "tie"),
                 "does not hold": lambda n: f"{n} {'does' if n == 1 else 'do'} not",
                 "not run": lambda n: f"{n} not run"}
        others = [words[v](claims[v]) for v in words if claims.get(v)]
        parts.append(", ".join([f"{claims.get('holds', 0)} of {sum(claims.values())} claims "
                                "hold", *others]))
    return "; ".join(parts) or None


def run_headline(run: Any) -> str | None:
    """:func:`reproduction_headline` of a loaded results folder (a ``RunResults``), ending
    with ``(quick run: fewer seeds, smaller problems)`` for a ``--quick`` run, whose verdicts
    are not the paper suite's."""
    line = reproduction_headline(run.manifest.get("experiments") or [], run.frame,
                                 run.directions)
    if line and run.manifest.get("quick"):
        line += " (quick run: fewer seeds, smaller problems)"
    return line
