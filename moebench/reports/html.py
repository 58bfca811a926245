"""``report.html``: one self-contained, offline, interactive page per results folder.

Everything is inlined (plotly.js, styles, the data of every figure), so the file opens with no
network. Per experiment: a sortable, filterable leaderboard; convergence curves against
iteration or algorithm time (a toggle) with the median and the 25-75 % band over seeds; box
plots of the final metrics over seeds; the paper's values as reference lines and bands, with
the verdicts and claims of ``REPRODUCTION.md``; failures and skips with their messages; and the
manifest (versions, device, command, date).

The page is rendered with Jinja2 from ``moebench/reports/templates/report.html.j2``; figures
are plain plotly figure dictionaries (JSON), drawn by plotly.js in the browser. The numbers
come from :mod:`moebench.reports.analysis` and the leaderboard cached on the
:class:`~moebench.reports.results.RunResults`; this module only lays them out.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .analysis import VERDICT_RULE, claim_rows, curve_stats, reference_rows, run_headline
from .figures import (
    Styles,
    box_figure,
    convergence_figure,
    figure_title,
    json_float,
    log_ticks,
    short_number,
    suboptimality_figure,
)
from .leaderboard import experiment_board, format_rows, mark_legend
from .phase import phase_finding
from .phase_report import phase_heatmap, phase_tables
from .results import SUCCESS, RunResults, describe_commit, describe_runs
from .suboptimality import (
    Reach,
    floor,
    suboptimality_curves,
    suboptimality_rows,
    time_to_tolerance,
)

__all__ = ["HTML_FILE", "build_context", "log_ticks", "render", "write_html"]

HTML_FILE = "report.html"


def _leaderboard_rows(board: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    formatted = format_rows(board)  # rank and mean ± std as the leaderboards print them
    for r, row in zip(board.itertuples(index=False), formatted, strict=True):
        score = row[2]
        rows.append({
            "dataset": r.dataset, "rank": None if math.isnan(r.rank) else int(r.rank),
            "rank_text": row[0], "algorithm": r.algorithm,
            "mean": json_float(r.mean), "std": json_float(r.std),
            "median": json_float(getattr(r, "median", math.nan)),
            "score": score,
            "seeds": int(r.n_seeds), "time": json_float(r.median_time),
            "iterations": json_float(r.median_iterations), "success": json_float(r.success_rate),
            "statuses": r.statuses,
        })
    return rows


def _failures(results: pd.DataFrame) -> list[dict[str, Any]]:
    finals = results[(results["record"] == "final") & ~results["status"].isin(SUCCESS)]
    out = []
    for r in finals.itertuples(index=False):
        message = "" if pd.isna(r.message) else str(r.message)
        out.append({"experiment": r.experiment, "dataset": r.dataset,
                    "algorithm": r.algorithm, "repetition": int(r.repetition),
                    "status": r.status, "summary": message.split("\n")[0],
                    "message": message})
    return out


def _manifest_items(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    argv = list(manifest.get("command") or [])
    if argv:
        argv[0] = Path(argv[0]).name
    items = [
        ("suite", f"{manifest.get('suite', '?')} ({manifest.get('suite_file') or '?'})"),
        ("moebench", f"{manifest.get('moebench', '?')} "
                     f"({describe_commit(manifest).replace('`', '')})"),
        ("command", " ".join(argv) or "?"),
        ("started", str(manifest.get("started", "?"))),
        ("finished", f"{manifest.get('finished', '?')} ({manifest.get('state', '?')})"),
        ("device", f"{manifest.get('device_description', manifest.get('device', '?'))}, dtype "
                   f"{manifest.get('dtype', '?')}"),
        ("machine", f"{manifest.get('platform', '?')}, {manifest.get('cpu_count', '?')} CPUs, "
                    f"{manifest.get('jobs', '?')} job(s) x {manifest.get('worker_threads', '?')}"
                    " torch thread(s)"),
        ("versions", f"Python {manifest.get('python', '?')}, numpy {manifest.get('numpy', '?')}"
                     f", torch {manifest.get('torch', '?')}, pandas "
                     f"{manifest.get('pandas', '?')}"),
        ("cells", ", ".join(f"{k}: {v}" for k, v in (manifest.get("folder_status_counts")
                                                      or manifest.get("status_counts") or {})
                            .items()) or "?"),
    ]
    runs = describe_runs(manifest)  # a folder several runs wrote into (subset runs)
    if runs:
        items.append(("runs", " ".join([runs[0], "; ".join(runs[1:]).replace("`", "")])))
    if manifest.get("quick"):
        items.append(("mode", "quick (fewer seeds, smaller problems)"))
    recorded_plugins = manifest.get("plugins") or {}  # as the run recorded them
    if recorded_plugins:
        items.append(("plugins", ", ".join(
            f"{name} {info.get('version') or '?'}" + ("" if info.get("status") == "loaded"
                                                      else f" ({info.get('status')})")
            for name, info in sorted(recorded_plugins.items()))))
    return items


class _Figures:
    """The plotly figures of a page, in order; each one's element id is ``fig-<index>``."""

    def __init__(self) -> None:
        self.all: list[dict[str, Any]] = []

    def add(self, fig: dict[str, Any] | None) -> str | None:
        if fig is None:
            return None
        self.all.append(fig)
        return f"fig-{len(self.all) - 1}"


def _dataset_plots(exp: dict[str, Any], run: RunResults, rank_by: str | None,
                   refs: list[dict[str, Any]], styles: Styles,
                   figures: _Figures) -> list[dict[str, Any]]:
    """Per dataset configuration of an experiment: its convergence figures (the suite's, or the
    ranking metric's) and box plots (the ranking metric, then the paper's metrics)."""
    name, results = exp["name"], run.frame
    wanted = [f for f in exp.get("figures") or [] if f.get("kind") != "phase"]
    if not wanted and rank_by:
        wanted = [{"metric": rank_by, "title": None, "log_y": False}]
    datasets = []
    for dataset in exp.get("datasets") or []:
        ds_refs = [r for r in refs if r["dataset"] == dataset]
        plots = []
        for fig in wanted:
            curves = curve_stats(results, name, dataset, fig["metric"])
            if curves:
                title = figure_title(fig.get("title") or fig["metric"],
                                     f"{dataset}: median and 25-75 % band over seeds")
                plots.append(figures.add(convergence_figure(
                    curves, fig["metric"], title, bool(fig.get("log_y")), styles, ds_refs,
                    run.direction(fig["metric"]))))
        box_metrics = [rank_by] if rank_by else []
        box_metrics += [r["metric"] for r in ds_refs if r["metric"] not in box_metrics]
        for metric in box_metrics:
            fid = figures.add(box_figure(results, name, dataset, metric, styles, ds_refs))
            if fid:
                plots.append(fid)
        reach = None
        objective = exp.get("objective")
        if objective:
            rows = suboptimality_rows(results, name, dataset, objective,
                                      run.direction(objective))
            fid = figures.add(suboptimality_figure(
                suboptimality_curves(rows, name, dataset), objective, dataset, floor(rows),
                styles))
            if fid:
                plots.append(fid)
                reach = _reach_table(time_to_tolerance(rows), objective)
        if plots:
            datasets.append({"name": dataset, "plots": plots, "reach": reach})
    return datasets


def _reach_table(reaches: list[Reach], objective: str) -> dict[str, Any]:
    """The time-to-tolerance table of one dataset: per algorithm and tolerance, the median
    algorithm time and iteration over the seeds that got there, and how many did."""
    tolerances = list(dict.fromkeys(r.tolerance for r in reaches))
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in reaches:
        rows.setdefault(r.algorithm, []).append({
            "time": json_float(r.median_time), "reached": r.reached, "seeds": r.seeds,
            "text": (f"{short_number(r.median_time, 3)} s, iteration "
                     f"{short_number(r.median_iteration, 4)}" if r.reached else "never"),
            "all": r.reached == r.seeds})
    return {"objective": objective, "tolerances": [f"{t:.0e}" for t in tolerances],
            "rows": [{"algorithm": a, "cells": cells} for a, cells in rows.items()]}


def _reference_items(refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's values beside moebench's, formatted for the page."""
    fmt = short_number
    return [{**r, "paper": fmt(r["paper_mean"], 3) + (
        f" ± {fmt(r['paper_std'], 2)}" if r["paper_std"] is not None else ""),
        "ours": (f"{fmt(r['mean'], 3)} ± {fmt(r['std'], 2)} ({len(r['values'])})"
                 if r["verdict"] else "not run"),
        "spread": (f"{fmt(r['median'], 3)} [{fmt(r['min'], 3)}, {fmt(r['max'], 3)}]"
                   if r["verdict"] else "-"),
        "ci": (f"[{fmt(r['ci'][0], 3)}, {fmt(r['ci'][1], 3)}]" if r["verdict"]
               else "-")} for r in refs]


def _claim_items(claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's claims with what was measured, formatted for the page."""
    return [{**c, "measured": (f"{c['better']} {short_number(c['mean_better'], 3)} vs "
                               f"{c['than']} {short_number(c['mean_than'], 3)}"
                               if c["mean_better"] is not None else "not run")}
            for c in claims]


def _section(exp: dict[str, Any], run: RunResults, styles: Styles,
             figures: _Figures) -> dict[str, Any] | None:
    """One experiment's part of the page (``None`` when it has no rows)."""
    name, results = exp["name"], run.frame
    sub = results[results["experiment"] == name]
    if sub.empty:
        return None
    rank_by = exp.get("rank_by") or next(
        (m for m in (exp.get("metrics") or []) if m in sub), None)
    for alg in sub["algorithm"].unique():
        styles.index(str(alg))
    board = experiment_board(run, name, rank_by) if rank_by else pd.DataFrame()
    refs = reference_rows(exp, results, run.directions) if exp.get("reference") else []
    claims = claim_rows(exp, results, run.directions) if exp.get("reference") else []
    datasets = _dataset_plots(exp, run, rank_by, refs, styles, figures)
    budget = exp.get("budget") or {}
    board_rows = _leaderboard_rows(board) if not board.empty else []
    return {
        "name": name,
        "anchor": "exp-" + "".join(c if c.isalnum() else "-" for c in name),
        "description": (exp.get("description") or "").strip(),
        "setting": (f"{exp.get('repetitions', '?')} seed(s); budget "
                    f"{budget.get('max_iter', '?')} iterations, "
                    f"{budget.get('timeout', '?')} s of algorithm time per cell"),
        "rank_by": rank_by,
        "direction": ("higher is better" if rank_by and run.direction(rank_by) == "max"
                      else "lower is better"),
        "leaderboard": board_rows,
        "mark_notes": [note.replace("`", "") for note in mark_legend(board)]
        if not board.empty else [],
        "reference": exp.get("reference"),
        "references": _reference_items(refs),
        "claims": _claim_items(claims),
        "datasets": datasets,
        "phases": [{"title": title, "finding": phase_finding(table),
                    "plot": figures.add(phase_heatmap(table, title))}
                   for table, title in phase_tables(exp, run)],
        "failures": _failures(sub),
    }


def build_context(run: RunResults | str | Path) -> dict[str, Any]:
    """Everything the template needs, computed from a results folder (loaded, or its path)."""
    run = RunResults.of(run)
    results, manifest = run.frame, run.manifest
    styles = Styles()
    figures = _Figures()
    experiments = manifest.get("experiments") or [
        {"name": e, "datasets": list(results.loc[results["experiment"] == e, "dataset"]
                                     .unique()), "rank_by": None, "figures": []}
        for e in results["experiment"].unique()
    ]
    sections = [s for s in (_section(exp, run, styles, figures) for exp in experiments)
                if s is not None]
    return {
        "title": f"moebench report: {run.suite}",
        "headline": run_headline(run),
        "manifest": _manifest_items(manifest),
        "sections": sections,
        "figures": figures.all,
        "legend": styles.legend(),
        "colors": {item["algorithm"]: item["color"] for item in styles.legend()},
        "verdict_rule": VERDICT_RULE.replace("*", ""),
        "total_failures": sum(len(s["failures"]) for s in sections),
        "plotly_js": plotly_js(),
    }


@functools.cache
def plotly_js() -> str:
    """plotly.js, read from the plotly package's data (without importing plotly: slow)."""
    spec = importlib.util.find_spec("plotly")
    roots = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(r) / "package_data" / "plotly.min.js" for r in roots]
    found = [f for f in found if f.is_file()]
    if found:
        text = found[0].read_text(encoding="utf-8")
    else:  # another layout: ask plotly
        from plotly.offline import get_plotlyjs

        text = get_plotlyjs()
    return text.replace("</script", "<\\/script")


def render(context: dict[str, Any]) -> str:
    """The HTML page of a :func:`build_context` result."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("moebench.reports", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(**context)


def write_html(run: RunResults | str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained ``report.html`` of a results folder.

    Parameters
    ----------
    run
        A loaded results folder (:class:`RunResults`), or the path of one written by
        ``moebench run`` (loaded once).
    out
        Folder to write into (default: the results folder).

    Returns
    -------
    Path
        The written file.
    """
    run = RunResults.of(run)
    out = Path(out) if out is not None else run.directory
    out.mkdir(parents=True, exist_ok=True)
    path = out / HTML_FILE
    html = render(build_context(run))
    tmp = path.with_name(f".{HTML_FILE}.tmp")
    try:
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    except OSError:  # a full disk: no half-written file stays behind
        tmp.unlink(missing_ok=True)
        raise
    return path
