"""Leaderboards: per experiment and dataset configuration, algorithms ranked by a metric.

Which way a metric is better comes from the results (``metric_directions`` in the manifest),
never from the installed plugins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cell.rows import WALL_OVER_FACTOR, WALL_OVER_GRACE
from .markdown_text import markdown_cell
from .results import SUCCESS, RunResults, metric_direction

COLUMNS = [
    "experiment",
    "dataset",
    "rank",
    "algorithm",
    "metric",
    "mean",
    "std",
    "median",
    "n_seeds",
    "median_time",
    "median_iterations",
    "success_rate",
    "statuses",
    "cut_short",
    "phase_skipped",
    "over_budget",
    "reference",
]

#: Marks a score some of whose seeds were cut short by the timeout (status ``timeout``).
CUT_SHORT_MARK = "†"
#: Marks a score over the surviving seeds of an algorithm some of whose seeds diverged, failed
#: or crashed: it ranks after every algorithm whose seeds all succeeded.
INCOMPLETE_MARK = "§"
#: Means closer than this (relative) are a tie: the same steps by different code paths.
TIE_RTOL = 1e-9
#: Marks a score some of whose seeds skipped a phase of a multi-phase algorithm (reported as
#: the extra ``joint = 0``: ``tensor-em`` with ``refine`` whose joint EM never started).
PHASE_MARK = "‡"
#: The rank column of a reference (an algorithm entry marked ``reference``: not ranked).
REFERENCE_TEXT = "ref."
#: Marks a score some of whose seeds ran far beyond their time budget in wall time (the final
#: row's ``wall_over_budget``: slept, waited or ignored the stop while the budget counted CPU
#: time): their times are not comparable.
OVER_BUDGET_MARK = "◊"


def leaderboard(results: pd.DataFrame, rank_by: Mapping[str, str] | str,
                directions: Mapping[str, str] | None = None,
                references: Mapping[str, Collection[str]] | None = None) -> pd.DataFrame:
    """Rank algorithms per (experiment, dataset) by the mean of a final metric over seeds.

    Parameters
    ----------
    results
        The tidy results table (``record == "final"`` rows are used).
    rank_by
        The metric to rank by, or a mapping experiment -> metric.
    directions
        Which way each metric is better, as recorded with the results
        (:attr:`RunResults.directions`); a metric missing there ranks lower-is-better, with a
        warning.
    references
        Per experiment, the algorithms marked ``reference`` in the suite
        (:attr:`RunResults.references`): listed after the ranked ones, without a rank.

    Returns
    -------
    pandas.DataFrame
        One row per (experiment, dataset, algorithm) with mean and std of the metric over
        successful cells (``std`` with ddof 0: the population std of the seeds run), its
        median, median time and iterations, success rate and status counts, and the
        successful seeds cut short by the timeout (``cut_short``), that skipped a phase
        (``phase_skipped``) or ran far beyond their time budget in wall time (``over_budget``).
        Skipped cells do not count towards the success rate; algorithms some of whose seeds
        diverged or failed rank after those whose seeds all succeeded, and algorithms without
        a finite mean rank last, unranked. References (``reference``) follow, unranked.
    """
    finals = results[results["record"] == "final"]
    rows = []
    for (exp, ds), group in finals.groupby(["experiment", "dataset"], sort=False):
        metric = rank_by if isinstance(rank_by, str) else rank_by.get(exp)
        marked = (references or {}).get(exp, ())
        block = []
        for alg, cells in group.groupby("algorithm", sort=False):
            ok = cells[cells["status"].isin(SUCCESS)]
            ran = cells[cells["status"] != "skipped"]
            values = ok[metric].astype(float) if metric in ok else pd.Series(dtype=float)
            values = values[np.isfinite(values)]
            counts = cells["status"].value_counts().to_dict()
            block.append(
                {
                    "experiment": exp,
                    "dataset": ds,
                    "algorithm": alg,
                    "metric": metric,
                    "mean": float(values.mean()) if len(values) else math.nan,
                    "std": float(values.std(ddof=0)) if len(values) else math.nan,
                    "median": float(values.median()) if len(values) else math.nan,
                    "n_seeds": int(len(values)),
                    "median_time": float(ok["time"].median()) if len(ok) else math.nan,
                    "median_iterations": float(ok["iteration"].median()) if len(ok) else math.nan,
                    # a success has a finite value: a cell killed at the hard limit has none
                    "success_rate": len(values) / len(ran) if len(ran) else math.nan,
                    "statuses": ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
                    "cut_short": int((ok["status"] == "timeout").sum()),
                    "phase_skipped": int((ok["extra.joint"] == 0).sum())
                    if "extra.joint" in ok else 0,
                    "over_budget": int((ok["wall_over_budget"] == 1).sum())
                    if "wall_over_budget" in ok else 0,
                    "reference": alg in marked,
                }
            )
        rows += _ranked(block, metric, directions)
    return pd.DataFrame(rows, columns=COLUMNS)


def _incomplete(success_rate: float) -> bool:
    """Some seeds that ran did not succeed (diverged, failed, crashed): the mean is over the
    survivors only."""
    return not math.isnan(success_rate) and success_rate < 1.0


def same_mean(a: float, b: float) -> bool:
    """Means equal to :data:`TIE_RTOL`: algorithms that take the same steps by different code
    paths differ by rounding only, and share a rank."""
    return abs(a - b) <= TIE_RTOL * max(abs(a), abs(b))


def _ranked(block: list[dict[str, Any]], metric: str | None,
            directions: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """One leaderboard's rows in rank order, with their ``rank``: by mean in the metric's
    direction, those whose every seed succeeded first; no rank without a finite value (all
    skipped, diverged or failed); equal means (:func:`same_mean`) share one; references
    (``reference``) come last, unranked."""
    # the direction matters (and is looked up) only when there is something to rank
    ranked = metric is not None and any(not math.isnan(r["mean"]) for r in block)
    sign = -1.0 if ranked and metric_direction(directions, metric) == "max" else 1.0
    block.sort(key=lambda r: (r["reference"], math.isnan(r["mean"]),
                              _incomplete(r["success_rate"]),
                              sign * r["mean"] if not math.isnan(r["mean"]) else 0.0,
                              r["algorithm"]))
    for i, r in enumerate(block, start=1):
        before = block[i - 2] if i > 1 else None
        tied = before is not None and not math.isnan(before["rank"]) \
            and _incomplete(before["success_rate"]) == _incomplete(r["success_rate"]) \
            and same_mean(r["mean"], before["mean"])
        if r["reference"] or math.isnan(r["mean"]):
            r["rank"] = math.nan
        else:
            r["rank"] = before["rank"] if tied else i
    return block


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


def mean_digits(means: pd.Series, start: int = 4, most: int = 12) -> int:
    """Significant digits that print different means differently (4 unless two of them
    would read the same)."""
    distinct: list[float] = []
    for m in sorted(float(m) for m in means if not math.isnan(m)):
        if not distinct or not same_mean(m, distinct[-1]):  # a tie prints alike, with its "="
            distinct.append(m)
    digits = start
    while digits < most and len({_fmt(m, digits) for m in distinct}) < len(distinct):
        digits += 1
    return digits


def rank_text(rank: float, ranks: pd.Series) -> str:
    """``"2"``, ``"2="`` when another algorithm shares it (an exact tie), ``"-"`` unranked."""
    if rank is None or math.isnan(rank):
        return "-"
    return f"{int(rank)}{'=' if int((ranks == rank).sum()) > 1 else ''}"


def format_rows(board: pd.DataFrame) -> list[list[str]]:
    """Human-readable cells (mean +- std, times) for terminal and Markdown tables; within a
    leaderboard, means get the digits that tell them apart and exact ties say so."""
    out = []
    digits = {key: mean_digits(group["mean"]) for key, group in
              board.groupby(["experiment", "dataset"], sort=False)}
    ranks = {key: group["rank"] for key, group in
             board.groupby(["experiment", "dataset"], sort=False)}
    for r in board.itertuples(index=False):
        key = (r.experiment, r.dataset)
        score = f"{_fmt(r.mean, digits[key])} ± {_fmt(r.std, 2)}" \
            if not math.isnan(r.mean) else "-"
        if getattr(r, "cut_short", 0) and score != "-":
            score += f" {CUT_SHORT_MARK}"
        if getattr(r, "phase_skipped", 0) and score != "-":
            score += f" {PHASE_MARK}"
        if getattr(r, "over_budget", 0) and score != "-":
            score += f" {OVER_BUDGET_MARK}"
        if score != "-" and _incomplete(r.success_rate):
            score += f" {INCOMPLETE_MARK}"
        out.append(
            [
                REFERENCE_TEXT if getattr(r, "reference", False)
                else rank_text(r.rank, ranks[key]),
                r.algorithm,
                score,
                str(r.n_seeds),
                _fmt(r.median_time, 3) + " s" if not math.isnan(r.median_time) else "-",
                _fmt(r.median_iterations),
                f"{r.success_rate:.0%}" if not math.isnan(r.success_rate) else "-",
                r.statuses,
            ]
        )
    return out


HEADERS = ["rank", "algorithm", "mean ± std", "seeds", "median time", "median iters",
           "success", "statuses"]


def to_markdown(board: pd.DataFrame, directions: Mapping[str, str] | None = None) -> str:
    """The Markdown tables of a leaderboard, one per (experiment, dataset), each saying which
    way its metric is better (from ``directions``, as recorded with the results)."""
    parts = []
    for (exp, ds), group in board.groupby(["experiment", "dataset"], sort=False):
        metric = group["metric"].iloc[0]
        better = metric is not None and metric_direction(directions, metric) == "max"
        arrow = "higher is better" if better else "lower is better"
        # labels and ids come from suite files: escaped, so that none breaks the table
        parts.append(f"### {markdown_cell(exp)} — {markdown_cell(ds)}\n\nranked by "
                     f"`{metric}` ({arrow})\n")
        parts.append("| " + " | ".join(HEADERS) + " |")
        parts.append("|" + "---|" * len(HEADERS))
        for row in format_rows(group):
            parts.append("| " + " | ".join(markdown_cell(cell) for cell in row) + " |")
        parts += [f"\n{line}" for line in mark_legend(group)]
        parts.append("")
    return "\n".join(parts)


def mark_legend(group: pd.DataFrame) -> list[str]:
    """What the marks in a leaderboard's scores mean, for the marks it uses."""
    lines = []
    if "cut_short" in group and group["cut_short"].fillna(0).astype(int).any():
        lines.append(f"{CUT_SHORT_MARK} some seeds were cut short by the timeout (status "
                     "`timeout`): their final values come from fewer iterations than the "
                     "budget's `max_iter`.")
    if any(not math.isnan(r.mean) and _incomplete(r.success_rate)
           for r in group.itertuples(index=False)):
        lines.append(f"{INCOMPLETE_MARK} some seeds diverged or failed (success under 100 %): "
                     "the score is over the seeds that succeeded, and the algorithm ranks after "
                     "every algorithm whose seeds all succeeded.")
    if "phase_skipped" in group and group["phase_skipped"].fillna(0).astype(int).any():
        lines.append(f"{PHASE_MARK} in some seeds a phase of the algorithm did not run "
                     "(e.g. tensor-em's joint-EM refinement: `extra.joint = 0`; see the "
                     "cells' messages).")
    if "reference" in group and group["reference"].fillna(False).astype(bool).any():
        lines.append(f"{REFERENCE_TEXT} a reference, not a competitor (e.g. an oracle that reads "
                     "the ground truth): shown for comparison, not ranked.")
    if "over_budget" in group and group["over_budget"].fillna(0).astype(int).any():
        lines.append(f"{OVER_BUDGET_MARK} some seeds ran far beyond their time budget in wall "
                     f"time (over {WALL_OVER_FACTOR:g} x `budget.timeout` and "
                     f"{WALL_OVER_GRACE:g} s past it; the budget counts CPU time by "
                     "default): the algorithm slept, waited for I/O or another process, or "
                     "ignored the stop, so its times are not comparable (see the cells' "
                     "messages and `wall_over_budget`).")
    return lines


def _ranking_key(rank_by: Mapping[str, str] | str) -> Any:
    return rank_by if isinstance(rank_by, str) else tuple(sorted(rank_by.items()))


def leaderboard_of(run: RunResults, rank_by: Mapping[str, str] | str | None = None
                   ) -> pd.DataFrame:
    """The leaderboard of a loaded run, computed once per ranking and cached on ``run``.

    Parameters
    ----------
    run
        A loaded results folder.
    rank_by
        The metric to rank by, or a mapping experiment -> metric (default: the metric each
        experiment ranks by, as recorded: :attr:`RunResults.rank_by`).

    Returns
    -------
    pandas.DataFrame
        See :func:`leaderboard`; ranked in the directions recorded with the results. The
        cached table is shared: do not modify it.
    """
    rank_by = run.rank_by if rank_by is None else rank_by
    key = _ranking_key(rank_by)
    if key not in run.boards:
        run.boards[key] = leaderboard(run.frame, rank_by, run.directions, run.references)
    return run.boards[key]


def experiment_board(run: RunResults, experiment: str, rank_by: str) -> pd.DataFrame:
    """The leaderboard of one experiment of a run, ranked by ``rank_by``: a slice of the
    run's cached leaderboard when ``rank_by`` is the metric recorded for the experiment."""
    if run.rank_by.get(experiment) == rank_by:
        board = leaderboard_of(run)
        return board[board["experiment"] == experiment]
    return leaderboard(run.frame[run.frame["experiment"] == experiment], rank_by,
                       run.directions, run.references)


def write_leaderboards(run: RunResults | str | Path) -> pd.DataFrame:
    """Write ``leaderboard.csv``/``.md`` of a results folder (loaded, or loaded from a path).

    Returns
    -------
    pandas.DataFrame
        The leaderboard (:func:`leaderboard_of` the run).
    """
    run = RunResults.of(run)
    board = leaderboard_of(run)
    board.to_csv(run.directory / "leaderboard.csv", index=False)
    manifest = run.manifest
    header = f"# Leaderboard: {run.suite}\n\n"
    meta = {k: manifest.get(k) for k in ("moebench", "device_description", "dtype", "git_commit",
                                         "started")}
    header += "```json\n" + json.dumps(meta, indent=1) + "\n```\n\n"
    (run.directory / "leaderboard.md").write_text(header + to_markdown(board, run.directions))
    return board
