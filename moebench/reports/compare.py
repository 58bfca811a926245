"""``moebench compare RUN_A RUN_B``: did a change make an algorithm slower or worse?

Cells are matched by their configuration (experiment, dataset and algorithm ids and their
parameters; not by cell key, which also hashes versions that a change bumps), and seeds are
paired by repetition: both runs used the same data and initial point for a given
(configuration, repetition). **The seed is the statistical unit**: each successful cell gives
one value per measure (:mod:`moebench.reports.measures`: for time, the median time per
iteration of that cell, on the CPU clock by default), and for each configuration present in
both runs:

- **time**: the ratio B / A of the medians over the paired seeds, with a two-sided paired
  Wilcoxon signed-rank test of the seeds' log ratios;
- **each metric**: the medians over seeds in A and B, with the same test on the differences;
- **successful cells**: fewer in B than in A is a regression.

Marks, as ``asv compare`` prints them: ``+`` worse (moved beyond the factor in the bad
direction **and** significant at ``alpha``), ``-`` better, ``~`` beyond the factor but not
significant, blank unchanged. A time moves beyond ``time_factor`` (default
:data:`TIME_FACTOR`, 1.5) when the ratio is above it or below its inverse; a metric moves
beyond ``factor`` (default 1.1) when it changes by more than ``factor - 1`` times its magnitude
in A. Metrics are reproducible bit for bit, times are not: identical code run side by side on
a shared 2-core VM (``moebench compare-commits``, the smoke suite, 6 seeds, ten tries) moved
by 0.64-1.36x per configuration, and half the tries had a significant move beyond 1.1, none
a ``+`` beyond 1.5, while twice the CPU work per iteration measured 1.6-2x
(docs/regression-tracking.md). On a quiet dedicated machine, ``time_factor=1.1`` catches
smaller slowdowns. With ``n`` paired seeds (differences of zero left out) the exact test's
smallest p-value is ``2 ** (1 - n)``: 3 seeds can never reach p < 0.05, 6 can;
:attr:`Comparison.underpowered` says so. Which way a metric is better comes from the
directions recorded with the runs (A's, else B's), never from the installed plugins.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import MoebenchError
from .measures import (
    CONFIG,
    TIME,
    Clock,
    clock_available,
    format_seconds,
    seed_measures,
    with_config,
)
from .results import SUCCESS, RunResults, metric_direction

#: The default factor of times (see the module docstring for the measurements behind it).
TIME_FACTOR = 1.5
ORDER = ("worse", "better", "unsure", "unchanged", "only in A", "only in B")
MARKS = {"worse": "+", "better": "-", "unsure": "~", "unchanged": " ", "only in A": "<",
         "only in B": ">"}
#: Metric differences below this are never a change (rounding of converged runs).
ABS_TOL = 1e-9


@dataclass
class Change:
    """One line of a comparison: one measure of one configuration."""

    verdict: str
    experiment: str
    dataset: str
    algorithm: str
    measure: str
    a: float | None = None
    b: float | None = None
    ratio: float | None = None
    p_value: float | None = None
    seeds: int = 0
    unit: str = ""
    note: str = ""

    @property
    def mark(self) -> str:
        """``+`` worse, ``-`` better, ``~`` beyond the factor but not significant, blank
        unchanged, ``<``/``>`` only in A/B."""
        return MARKS[self.verdict]

    @property
    def name(self) -> str:
        """``experiment / dataset / algorithm``."""
        return f"{self.experiment} / {self.dataset} / {self.algorithm}"

    def as_dict(self) -> dict[str, Any]:
        data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}
        return {"mark": self.mark, **data}


@dataclass
class Comparison:
    """The result of :func:`compare_runs`: the changes and how they were decided."""

    run_a: str
    run_b: str
    commit_a: str | None
    commit_b: str | None
    clock: str
    factor: float
    time_factor: float
    alpha: float
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        """The changes that make ``--fail-on-regression`` exit 1."""
        return regressions(self.changes)

    @property
    def counts(self) -> dict[str, int]:
        """How many changes of each verdict."""
        return {v: sum(c.verdict == v for c in self.changes) for v in ORDER}

    @property
    def underpowered(self) -> str | None:
        """A sentence when some measure has too few paired values to ever reach ``alpha``
        (and how many would), else ``None``."""
        tested = [c for c in self.changes if c.p_value is not None and 0 < c.seeds
                  and smallest_p(c.seeds) >= self.alpha]
        if not tested:
            return None
        counts = sorted({c.seeds for c in tested})
        need = seeds_needed(self.alpha)
        have = ", ".join(map(str, counts))
        return (f"{len(tested)} measure(s) have only {have} seed(s) with a value in both runs: "
                f"the exact test cannot reach p < {self.alpha:g} (smallest p: "
                f"{smallest_p(counts[-1]):.3g}), so they can be ~ but never + or -; "
                f"{need} seeds with values in both runs can (--seeds {need})")

    def as_dict(self) -> dict[str, Any]:
        return {"run_a": self.run_a, "run_b": self.run_b, "commit_a": self.commit_a,
                "commit_b": self.commit_b, "clock": self.clock, "factor": self.factor,
                "time_factor": self.time_factor, "alpha": self.alpha, "counts": self.counts,
                "regressions": len(self.regressions), "underpowered": self.underpowered,
                "notes": self.notes, "changes": [c.as_dict() for c in self.changes]}


def smallest_p(seeds: int) -> float:
    """The smallest two-sided p-value of the exact signed-rank test with ``seeds`` pairs."""
    return min(1.0, 2.0 ** (1 - seeds)) if seeds > 0 else 1.0


def seeds_needed(alpha: float) -> int:
    """The fewest paired seeds with which the exact signed-rank test can reach ``alpha``."""
    n = 1
    while smallest_p(n) >= alpha:
        n += 1
    return n


def _wilcoxon(d: np.ndarray) -> float:
    """Two-sided p-value of the signed-rank test of paired differences ``d`` (1.0 without
    differences)."""
    from scipy import stats

    d = np.asarray(d, float)
    d = d[np.isfinite(d) & (d != 0)]
    if len(d) == 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(stats.wilcoxon(d).pvalue)
        except ValueError:
            return 1.0


def compare_runs(run_a: RunResults | str | Path, run_b: RunResults | str | Path,
                 factor: float = 1.1, metrics: list[str] | None = None, alpha: float = 0.05,
                 clock: Clock = "cpu", time_factor: float = TIME_FACTOR) -> Comparison:
    """Compare two results folders (see the module docstring).

    Parameters
    ----------
    run_a, run_b
        Results folders, loaded or their paths (each loaded once): A is the base, B the
        change.
    factor
        How much worse (or better) a metric must get to count, e.g. ``1.1``: 10 %.
    metrics
        Measures to compare: metric names and/or ``"time"`` (default: time and every metric
        of each experiment).
    alpha
        Significance level of the paired tests.
    clock
        ``"cpu"`` (default: load on other cores does not stretch it) or ``"wall"``.
    time_factor
        How much slower (or faster) the time per iteration must get to count.

    Returns
    -------
    Comparison
        Its changes sorted worse, better, unsure (``~``), unchanged, only in A, only in B;
        within a group, by how far the measure moved.
    """
    run_a, run_b = RunResults.of(run_a), RunResults.of(run_b)
    _check_measures(metrics, run_a, run_b)
    result = Comparison(str(run_a.directory), str(run_b.directory),
                        run_a.manifest.get("git_commit"), run_b.manifest.get("git_commit"),
                        clock, factor, time_factor, alpha)
    if clock == "cpu" and not (clock_available(run_a, "cpu") and clock_available(run_b, "cpu")):
        result.clock = "wall"
        result.notes.append("one of the runs recorded no CPU time: times compared on the "
                            "wall clock")
    finals_a, finals_b = _by_config(run_a), _by_config(run_b)
    for key in finals_a.keys() - finals_b.keys():
        result.changes.append(Change("only in A", *key[:3], "cells", seeds=len(finals_a[key])))
    for key in finals_b.keys() - finals_a.keys():
        result.changes.append(Change("only in B", *key[:3], "cells", seeds=len(finals_b[key])))
    both = [k for k in finals_a if k in finals_b]
    result.changes += [c for k in both if (c := _cells_change(k, finals_a[k], finals_b[k]))]
    result.changes += _measure_changes(run_a, run_b, set(both), metrics, result)
    rank = {v: i for i, v in enumerate(ORDER)}
    result.changes.sort(key=lambda c: (rank[c.verdict], -_severity(c), c.experiment, c.dataset,
                                       c.algorithm, c.measure != TIME, c.measure))
    return result


def _check_measures(metrics: list[str] | None, run_a: RunResults, run_b: RunResults) -> None:
    """Every measure asked for exists in one of the runs (a typo must not compare nothing)."""
    known = {TIME}
    for run in (run_a, run_b):
        for names in (run.manifest.get("metrics") or {}).values():
            known.update(n for n in names if n in run.frame)
    unknown = [m for m in metrics or [] if m not in known]
    if unknown:
        raise MoebenchError(f"no measure {', '.join(map(repr, unknown))} in these runs: "
                            f"choose from {', '.join(sorted(known))}")


def _by_config(run: RunResults) -> dict[tuple, pd.DataFrame]:
    finals = with_config(run.frame[run.frame["record"] == "final"])
    return {tuple(k): g for k, g in finals.groupby(CONFIG, sort=False)}


def _cells_change(key: tuple, a: pd.DataFrame, b: pd.DataFrame) -> Change | None:
    """Fewer (more) successful cells in B among the repetitions both runs hold."""
    both = set(a["repetition"]) & set(b["repetition"])
    a, b = a[a["repetition"].isin(both)], b[b["repetition"].isin(both)]
    ok_a = int(a["status"].isin(SUCCESS).sum())
    ok_b = int(b["status"].isin(SUCCESS).sum())
    if ok_a == ok_b:
        return None
    statuses = ", ".join(f"{s}: {n}" for s, n in b["status"].value_counts().items())
    return Change("worse" if ok_b < ok_a else "better", *key[:3], "successful cells",
                  float(ok_a), float(ok_b), seeds=len(both), note=f"B: {statuses}")


def _measure_changes(run_a: RunResults, run_b: RunResults, keys: set[tuple],
                     metrics: list[str] | None, result: Comparison) -> list[Change]:
    values_a = seed_measures(run_a, metrics, result.clock)
    values_b = seed_measures(run_b, metrics, result.clock)
    paired = values_a.merge(values_b, on=[*CONFIG, "repetition", "measure"], how="inner",
                            suffixes=("_a", "_b"))
    directions = {**run_b.directions, **run_a.directions}
    changes = []
    for (*key, measure), rows in paired.groupby([*CONFIG, "measure"], sort=False):
        if tuple(key) not in keys:
            continue
        x, y = rows["value_a"].to_numpy(float), rows["value_b"].to_numpy(float)
        lost = _lost_values(key, measure, x, y)
        if lost is not None:
            changes.append(lost)
            continue
        keep = np.isfinite(x) & np.isfinite(y)
        if measure == TIME:
            keep &= (x > 0) & (y > 0)
        x, y = x[keep], y[keep]
        if not len(x):
            changes.append(Change("unchanged", *key[:3], measure, note="no values in A or B"))
        elif measure == TIME:
            changes.append(_time_change(key, x, y, result))
        else:
            direction = metric_direction(directions, measure)
            changes.append(_metric_change(key, measure, x, y, result, direction))
    return changes


def _lost_values(key: list, measure: str, x: np.ndarray, y: np.ndarray) -> Change | None:
    """A measure finite in A but not in B for some seed is worse (B lost it: NaN, inf), and
    better the other way round; ``None`` when the seeds agree on which values exist."""
    lost = int((np.isfinite(x) & ~np.isfinite(y)).sum())
    gained = int((~np.isfinite(x) & np.isfinite(y)).sum())
    if not lost and not gained:
        return None
    a = float(np.nanmedian(x)) if np.isfinite(x).any() else None
    b = float(np.nanmedian(y)) if np.isfinite(y).any() else None
    if lost:
        return Change("worse", *key[:3], measure, a, b, seeds=len(x), unit=_unit(measure),
                      note=f"no finite value in B for {lost} seed(s) that had one in A")
    return Change("better", *key[:3], measure, a, b, seeds=len(x), unit=_unit(measure),
                  note=f"a finite value in B for {gained} seed(s) that had none in A")


def _unit(measure: str) -> str:
    return "s" if measure == TIME else ""


def _decide(worse_by: float, better_by: float, p: float, alpha: float) -> str:
    """``worse_by``/``better_by`` > 0: the move beyond the factor in that direction."""
    if worse_by > 0 or better_by > 0:
        if p >= alpha:
            return "unsure"
        return "worse" if worse_by > 0 else "better"
    return "unchanged"


def _time_change(key: list, x: np.ndarray, y: np.ndarray, result: Comparison) -> Change:
    ma, mb = float(np.median(x)), float(np.median(y))
    ratio = mb / ma
    p = _wilcoxon(np.log(y) - np.log(x))
    f = result.time_factor
    verdict = _decide(ratio - f, 1 / f - ratio, p, result.alpha)
    return Change(verdict, *key[:3], TIME, ma, mb, ratio, p, len(x), unit="s",
                  note=f"per iteration, {result.clock} clock")


def _metric_change(key: list, metric: str, x: np.ndarray, y: np.ndarray, result: Comparison,
                   direction: str) -> Change:
    ma, mb = float(np.median(x)), float(np.median(y))
    sign = 1.0 if direction == "min" else -1.0
    worse_by = sign * (mb - ma)  # > 0: B is worse
    bound = max((result.factor - 1.0) * abs(ma), ABS_TOL)
    p = _wilcoxon(y - x)
    ratio = mb / ma if ma != 0 else (1.0 if mb == 0 else math.inf)
    verdict = _decide(worse_by - bound, -worse_by - bound, p, result.alpha)
    return Change(verdict, *key[:3], metric, ma, mb, ratio, p, len(x),
                  note="lower is better" if direction == "min" else "higher is better")


def _severity(c: Change) -> float:
    if c.ratio is None or not math.isfinite(c.ratio) or c.ratio <= 0:
        return 0.0
    return abs(math.log(c.ratio))


def regressions(changes: list[Change]) -> list[Change]:
    """The changes that make ``--fail-on-regression`` exit 1."""
    return [c for c in changes if c.verdict == "worse"]


def _value(c: Change, x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return format_seconds(x) if c.unit == "s" else format(x, ".4g")


def change_cells(c: Change) -> list[str]:
    """A change as text cells: mark, A, B, B / A, p, seeds, measure, configuration."""
    measure = c.measure + (f" ({c.note})" if c.note and c.unit != "s" and c.verdict in
                           ("only in A", "only in B", "worse", "better") else "")
    if c.verdict in ("only in A", "only in B"):
        measure = f"{c.verdict}: {c.seeds} cell(s)"
    return [c.mark, _value(c, c.a), _value(c, c.b),
            "-" if c.ratio is None or not math.isfinite(c.ratio) else f"{c.ratio:.3g}",
            "-" if c.p_value is None else f"{c.p_value:.2g}", str(c.seeds), measure, c.name]


def heading_lines(result: Comparison) -> list[str]:
    """Which runs, which clock, what the marks mean."""
    def commit(sha: str | None) -> str:
        return f" (git {sha[:8]}{' dirty' if sha.endswith('-dirty') else ''})" if sha else ""

    factors = f"time factor {result.time_factor:g}, metric factor {result.factor:g}"
    return [f"A: {result.run_a}{commit(result.commit_a)}",
            f"B: {result.run_b}{commit(result.commit_b)}",
            f"time: median seconds per iteration, {result.clock} clock; one value per seed; "
            f"+ worse, - better, ~ beyond the factor but not significant ({factors}, "
            f"alpha {result.alpha:g})"]


def summary_lines(result: Comparison) -> list[str]:
    """The counts, the notes, the power warning and the regressions by name."""
    counts = result.counts
    lines = [", ".join(f"{'~' if k == 'unsure' else k}: {v}" for k, v in counts.items())]
    lines += [f"note: {n}" for n in result.notes]
    if result.underpowered:
        lines.append(f"note: {result.underpowered}")
    for c in result.regressions:
        moved = f" {c.ratio:.3g}x" if c.ratio is not None and math.isfinite(c.ratio) else ""
        why = f"p {c.p_value:.2g}, {c.seeds} seeds" if c.p_value is not None else c.note
        lines.append(f"regression: {c.name}: {c.measure} {_value(c, c.a)} -> "
                     f"{_value(c, c.b)}{moved} ({why})")
    return lines


def shown_changes(result: Comparison, only_changed: bool) -> tuple[list[Change], list[str]]:
    """The changes to list, and the line saying how many unchanged ones were left out."""
    shown = [c for c in result.changes if not (only_changed and c.verdict == "unchanged")]
    hidden = len(result.changes) - len(shown)
    return shown, ([f"({hidden} unchanged measure(s) not shown; --all lists them)"]
                   if hidden else [])


def text_lines(result: Comparison, only_changed: bool = True) -> list[str]:
    """The comparison as fixed-width lines, one per measure, for pipes and CI logs (``asv
    compare``'s layout: the name last, so no line wraps into a table)."""
    shown, hidden = shown_changes(result, only_changed)
    widths = [1, 10, 10, 6, 7, 5]
    header = ["", "A", "B", "B/A", "p", "seeds"]
    def row(cells: list[str]) -> str:
        fixed = " ".join(cell.rjust(w) for cell, w in zip(cells[:6], widths, strict=True))
        return f"{fixed}  {cells[6]:<16} {cells[7]}".rstrip() if len(cells) > 6 else fixed

    lines = heading_lines(result) + [row([*header, "measure", "experiment / dataset / "
                                                              "algorithm"])]
    lines += [row(change_cells(c)) for c in shown]
    return lines + hidden + summary_lines(result)
