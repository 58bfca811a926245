"""The end of a run: a compact per-experiment summary and the complete failure list.

``failures.md`` (in the results folder) lists every cell that did not succeed, with its
experiment, dataset, algorithm, seed, status and full message; the console shows one line per
experiment (winner, counts by status, cells that ran far beyond their time budget in wall time)
and where the full tables are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .leaderboard import OVER_BUDGET_MARK, leaderboard_of
from .markdown_text import markdown_cell
from .results import SUCCESS, RunResults, name_cells

FAILURES_FILE = "failures.md"


def failures(results: pd.DataFrame) -> pd.DataFrame:
    """The final rows of the cells that did not succeed (skipped, error, diverged, crashed)."""
    finals = results[(results["record"] == "final") & ~results["status"].isin(SUCCESS)]
    return finals.sort_values(["experiment", "status", "dataset", "algorithm", "repetition"],
                              kind="stable")


def write_failures(run: RunResults | str | Path) -> Path:
    """Write ``failures.md``: every unsuccessful cell with its full message.

    Parameters
    ----------
    run
        A loaded results folder (:class:`RunResults`), or the path of one (loaded once).

    Returns
    -------
    Path
        The file (written also when every cell succeeded, saying so).
    """
    run = RunResults.of(run)
    bad = failures(run.frame)
    lines = [f"# Failures and skips: {run.suite}", ""]
    if bad.empty:
        lines.append("Every cell succeeded.")
    else:
        counts = bad["status"].value_counts()
        lines += [f"{len(bad)} cell(s) did not succeed ("
                  + ", ".join(f"{s}: {n}" for s, n in counts.items()) + ").", ""]
        for exp, group in bad.groupby("experiment", sort=False):
            lines += [f"## {markdown_cell(exp)}", "",
                      "| dataset | algorithm | seed | status | message |", "|---|---|---|---|---|"]
            details = []
            for r in group.itertuples(index=False):
                message = "" if pd.isna(r.message) else str(r.message)
                ds, alg = markdown_cell(r.dataset), markdown_cell(r.algorithm)
                lines.append(f"| {ds} | {alg} | {r.repetition} | {r.status} | "
                             f"{markdown_cell(message.split(chr(10))[0])} |")
                if "\n" in message.strip():  # a fence longer than any backtick run inside
                    fence = "`" * max(3, 1 + max((len(m) for m in
                                                  re.findall("`+", message)), default=0))
                    details += [f"<details><summary>{ds} / {alg} / seed "
                                f"{r.repetition}</summary>", "", fence, message.strip(), fence,
                                "", "</details>", ""]
            lines += ["", *details]
    path = run.directory / FAILURES_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ExperimentSummary:
    """One experiment in the end-of-run summary."""

    experiment: str
    metric: str | None
    winner: str | None
    score: str
    counts: dict[str, int]
    #: Cells whose wall time was far beyond their time budget (``wall_over_budget``).
    over_budget: int = 0


def summarize(run: RunResults | str | Path) -> list[ExperimentSummary]:
    """Per experiment: the best algorithm (on its best dataset configuration's ranking, i.e.
    the algorithm ranked first most often), its score, and the cells' counts by status.

    ``run``: a loaded results folder, or the path of one (loaded once); ranked in the
    directions recorded with the results."""
    run = RunResults.of(run)
    ranks = run.rank_by
    board = leaderboard_of(run) if ranks else pd.DataFrame()
    finals = run.frame[run.frame["record"] == "final"]
    out = []
    for exp, group in finals.groupby("experiment", sort=False):
        counts = {str(k): int(v) for k, v in group["status"].value_counts().items()}
        over = int((group["wall_over_budget"] == 1).sum()) if "wall_over_budget" in group else 0
        metric, winner, score = ranks.get(exp), None, "-"
        if not board.empty:
            firsts = board[(board["experiment"] == exp) & (board["rank"] == 1)
                           & board["mean"].notna()]
            if not firsts.empty:
                wins = firsts["algorithm"].value_counts()
                winner = str(wins.index[0])
                n_configs = int(board[board["experiment"] == exp]["dataset"].nunique())
                if n_configs == 1:
                    row = firsts.iloc[0]
                    score = f"{metric} {row['mean']:.4g} ± {row['std']:.2g}"
                    if row.get("over_budget", 0):
                        score += f" {OVER_BUDGET_MARK}"
                else:
                    score = (f"first on {int(wins.iloc[0])} of {n_configs} dataset "
                             "configurations")
        out.append(ExperimentSummary(str(exp), metric, winner, score, counts, over))
    return out


def summary_lines(run: RunResults | str | Path) -> list[str]:
    """Plain-text lines of the end-of-run summary (no markup) of a loaded results folder or
    the path of one."""
    run = RunResults.of(run)
    lines = []
    for s in summarize(run):
        arrow = ""
        if s.metric:
            arrow = ", higher is better" if run.direction(s.metric) == "max" else ""
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
        best = f"best {s.winner} ({s.score}{arrow})" if s.winner else "no successful cell"
        ranked = f" (ranked by {s.metric})" if s.metric else ""
        over = (f"; {s.over_budget} cell{'s' if s.over_budget != 1 else ''} ran far beyond "
                f"the time budget in wall time {OVER_BUDGET_MARK} (see the messages)"
                if s.over_budget else "")
        lines.append(f"{s.experiment}{ranked}: {best}; cells: {counts}{over}")
    return lines


def where_lines(directory: str | Path) -> list[str]:
    """Where the full tables, report and failure list of a results folder are."""
    directory = Path(directory)
    found = []
    for name, what in (("leaderboard.md", "leaderboards"), ("report.html", "interactive report"),
                       ("REPRODUCTION.md", "reproduction report"),
                       (FAILURES_FILE, "failures and skips"), ("results.parquet", "table")):
        if (directory / name).exists():
            found.append(f"{what}: {directory / name}")
    return found


_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])")


def failure_kinds(results: pd.DataFrame) -> list[tuple[str, str, int]]:
    """``(status, first message line, count)`` per kind of failure, most frequent first.

    Messages that differ only in their numbers ("blew up at iteration 29" / "... 23") are one
    kind, shown with the message of its first cell and "(and similar)"; each reason ends with
    the cells it concerns, by algorithm and seed.
    """
    bad = failures(results)
    if bad.empty:
        return []
    first = bad["message"].fillna("").astype(str).str.split("\n").str[0]
    kinds: dict[tuple[str, str], list[Any]] = {}
    for i, (status, line) in enumerate(zip(bad["status"], first, strict=True)):
        key = (str(status), _NUMBER.sub("#", line))
        kind = kinds.setdefault(key, [line, [], set()])
        kind[1].append(i)
        kind[2].add(line)
    out = [(status, (example if len(lines) == 1 else f"{example} (and similar)")
            + f" ({name_cells(bad.iloc[rows])})", len(rows))
           for (status, _), (example, rows, lines) in kinds.items()]
    return sorted(out, key=lambda k: -k[2])
