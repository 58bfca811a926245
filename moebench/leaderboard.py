"""Leaderboards: per experiment and dataset configuration, algorithms ranked by a metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import plugins
from .results import SUCCESS, read_manifest, read_results

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
]

#: Marks a score some of whose seeds were cut short by the timeout (status ``timeout``).
CUT_SHORT_MARK = "†"
#: Marks a score some of whose seeds skipped a phase of a multi-phase algorithm (reported as
#: the extra ``joint = 0``: ``tensor-em`` with ``refine`` whose joint EM never started).
PHASE_MARK = "‡"


def metric_direction(metric: str) -> str:
    """``"min"`` or ``"max"``: which way the registered metric ``metric`` is better."""
    try:
        return plugins.get("metrics", metric).direction
    except Exception:
        return "min"


def leaderboard(results: pd.DataFrame, rank_by: dict[str, str] | str) -> pd.DataFrame:
    """Rank algorithms per (experiment, dataset) by the mean of a final metric over seeds.

    Parameters
    ----------
    results
        The tidy results table (``record == "final"`` rows are used).
    rank_by
        The metric to rank by, or a mapping experiment -> metric.

    Returns
    -------
    pandas.DataFrame
        One row per (experiment, dataset, algorithm) with mean and std of the metric over
        successful cells (``std`` with ddof 0: the population std of the seeds run), its
        median, median time and iterations, success rate and status counts.
        Skipped cells do not count towards the success rate; algorithms without a finite
        mean rank last.
    """
    finals = results[results["record"] == "final"]
    rows = []
    for (exp, ds), group in finals.groupby(["experiment", "dataset"], sort=False):
        metric = rank_by if isinstance(rank_by, str) else rank_by.get(exp)
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
                }
            )
        sign = -1.0 if metric_direction(metric) == "max" else 1.0
        block.sort(key=lambda r: (math.isnan(r["mean"]), sign * r["mean"] if not
                                  math.isnan(r["mean"]) else 0.0, r["algorithm"]))
        for i, r in enumerate(block, start=1):
            r["rank"] = i
        rows += block
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


def format_rows(board: pd.DataFrame) -> list[list[str]]:
    """Human-readable cells (mean +- std, times) for terminal and Markdown tables."""
    out = []
    for r in board.itertuples(index=False):
        score = f"{_fmt(r.mean)} ± {_fmt(r.std, 2)}" if not math.isnan(r.mean) else "-"
        if getattr(r, "cut_short", 0) and score != "-":
            score += f" {CUT_SHORT_MARK}"
        if getattr(r, "phase_skipped", 0) and score != "-":
            score += f" {PHASE_MARK}"
        out.append(
            [
                str(r.rank),
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


def to_markdown(board: pd.DataFrame) -> str:
    parts = []
    for (exp, ds), group in board.groupby(["experiment", "dataset"], sort=False):
        metric = group["metric"].iloc[0]
        arrow = "higher is better" if metric_direction(metric) == "max" else "lower is better"
        parts.append(f"### {exp} — {ds}\n\nranked by `{metric}` ({arrow})\n")
        parts.append("| " + " | ".join(HEADERS) + " |")
        parts.append("|" + "---|" * len(HEADERS))
        for row in format_rows(group):
            parts.append("| " + " | ".join(row) + " |")
        if "cut_short" in group and group["cut_short"].fillna(0).astype(int).any():
            parts.append(f"\n{CUT_SHORT_MARK} some seeds were cut short by the timeout (status "
                         "`timeout`): their final values come from fewer iterations than the "
                         "budget's `max_iter`.")
        if "phase_skipped" in group and group["phase_skipped"].fillna(0).astype(int).any():
            parts.append(f"\n{PHASE_MARK} in some seeds a phase of the algorithm did not run "
                         "(e.g. tensor-em's joint-EM refinement: `extra.joint = 0`; see the "
                         "cells' messages).")
        parts.append("")
    return "\n".join(parts)


def rank_metrics(directory: Path, results: pd.DataFrame) -> dict[str, str]:
    """The metric each experiment ranks by, as recorded in the manifest."""
    manifest = read_manifest(directory)
    ranks = manifest.get("rank_by") or {}
    if not ranks:  # fall back to the first metric column present
        candidates = [c for c in results.columns if c in plugins.components("metrics")]
        ranks = {exp: candidates[0] for exp in results["experiment"].unique()} if candidates \
            else {}
    return ranks


def write_leaderboards(directory: str | Path) -> pd.DataFrame:
    """Compute the leaderboard of a results folder and write ``leaderboard.csv``/``.md``."""
    directory = Path(directory)
    results = read_results(directory)
    board = leaderboard(results, rank_metrics(directory, results))
    board.to_csv(directory / "leaderboard.csv", index=False)
    manifest = read_manifest(directory)
    header = f"# Leaderboard: {manifest.get('suite', directory.name)}\n\n"
    meta = {k: manifest.get(k) for k in ("moebench", "device_description", "dtype", "git_commit",
                                         "started")}
    header += "```json\n" + json.dumps(meta, indent=1) + "\n```\n\n"
    (directory / "leaderboard.md").write_text(header + to_markdown(board))
    return board
