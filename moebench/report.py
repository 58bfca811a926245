"""REPRODUCTION.md: a run's measurements beside the numbers and claims of the source papers.

For every experiment of a results folder: the paper's reported values next to moebench's
(mean ± std over seeds) with a one-line verdict, the paper's qualitative claims checked against
the measurements, convergence curves (PNG) and the leaderboard.
"""

from __future__ import annotations

import math
import platform
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .leaderboard import HEADERS, format_rows, leaderboard, metric_direction
from .results import SUCCESS, read_manifest, read_results, unsuccessful_cells

REPORT_FILE = "REPRODUCTION.md"
#: Claims whose two means differ by less than this fraction are reported as a tie.
TIE = 1e-3
FIGURE_DIR = "figures"


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


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
        table = group.pivot_table(index="iteration", columns="repetition", values=metric)
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


def reference_rows(exp: dict[str, Any], results: pd.DataFrame) -> list[dict[str, Any]]:
    """The paper's values of an experiment beside moebench's, one dict per reference value.

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
                                       metric_direction(v["metric"])))
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


def claim_rows(exp: dict[str, Any], results: pd.DataFrame) -> list[dict[str, Any]]:
    """The paper's claims of an experiment checked per dataset, one dict per (claim, dataset).

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
                wins = ma < mb if metric_direction(c["metric"]) == "min" else ma > mb
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


def curve_stats(results: pd.DataFrame, experiment: str, dataset: str, metric: str
                ) -> list[Curve]:
    """Per algorithm, the :class:`Curve` of ``metric`` against iterations (and time).

    Successful cells only (``done``, ``max_iter``, ``timeout``); a seed that stopped early
    keeps its last value (it has converged, or its budget ran out).
    """
    sel = results[(results["experiment"] == experiment) & (results["dataset"] == dataset)]
    rows = sel[sel["record"] == "iteration"]
    finals = sel[sel["record"] == "final"]
    out = []
    for algorithm, group in rows.groupby("algorithm", sort=False):
        fin = finals[finals["algorithm"] == algorithm]
        group = group[group["status"].isin(SUCCESS)]
        if metric not in group or group[metric].isna().all():
            continue
        values = group.pivot_table(index="iteration", columns="repetition",
                                   values=metric).ffill()
        times = group.pivot_table(index="iteration", columns="repetition",
                                  values="time").ffill()
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


def _plot(path: Path, curve_list: list[Curve], metric: str, title: str, log_y: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = use_log(curve_list, log_y)
    clip = y_range(curve_list, log, metric_direction(metric))
    fig, ax = plt.subplots(figsize=(6, 4))
    markers = "os^vD<>ph*"
    for i, c in enumerate(curve_list):
        label = c.algorithm + (f" ({c.timeouts} timeout)" if c.timeouts else "") + \
            (f" ({c.diverged} diverged, not in the band)" if c.diverged and len(c.iteration)
             else f" ({c.diverged} diverged, not drawn)" if c.diverged else "") + \
            (" (off scale)" if c.off_scale else "")
        every = max(1, len(c.iteration) // 8)
        (line,) = ax.plot(c.iteration, c.median, label=label, marker=markers[i % len(markers)],
                          markevery=every, markersize=4)
        ax.fill_between(c.iteration, c.q25, c.q75, alpha=0.2, color=line.get_color())
        if c.timeouts and len(c.iteration):
            ax.plot(c.iteration[-1:], c.median[-1:], marker="X", markersize=9,
                    color=line.get_color(), linestyle="none")
    if log:
        ax.set_yscale("log")
    if clip is not None:
        ax.set_ylim(*clip)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{metric} (median, 25-75 % band over seeds)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _commit(manifest: dict[str, Any]) -> str:
    """``git COMMIT`` with the tree's state: clean, or with uncommitted changes."""
    commit = manifest.get("git_commit")
    if not commit:
        return "git commit unknown"
    if commit.endswith("-dirty"):
        return f"git `{commit.removesuffix('-dirty')}` with uncommitted changes"
    return f"git `{commit}`, clean tree"


def _header(manifest: dict[str, Any]) -> list[str]:
    started, finished = manifest.get("started"), manifest.get("finished")
    minutes = "?"
    if started and finished:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started))
        minutes = f"{seconds.total_seconds() / 60:.1f}"
    argv = list(manifest.get("command") or [])
    if argv:
        argv[0] = Path(argv[0]).name  # "moebench", not the installer's path
    command = " ".join(argv) or "?"
    return [
        f"# Reproduction report: `{manifest.get('suite', '?')}`",
        "",
        f"Generated by moebench {manifest.get('moebench', '?')} ({_commit(manifest)}) "
        f"from a run started {started} and "
        f"finished {finished} ({minutes} min wall time), with `{command}`"
        + (" (quick mode: fewer seeds, smaller problems)" if manifest.get("quick") else "")
        + ".",
        "",
        f"Machine: {manifest.get('platform', platform.platform())}, "
        f"{manifest.get('cpu_count', '?')} CPUs, {manifest.get('torch_threads', '?')} torch "
        f"threads, device {manifest.get('device_description', '?')}, dtype "
        f"{manifest.get('dtype', '?')}; Python {manifest.get('python', '?')}, numpy "
        f"{manifest.get('numpy', '?')}, torch {manifest.get('torch', '?')}.",
        "",
        VERDICT_RULE,
        "",
    ]


def write_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """Write ``REPRODUCTION.md`` and its figures for a results folder.

    Parameters
    ----------
    directory
        A results folder written by ``moebench run``.
    out
        Where to write (default: ``directory``); figures go to ``<out>/figures/``.

    Returns
    -------
    Path
        The report file.
    """
    directory = Path(directory)
    out = Path(out) if out is not None else directory
    (out / FIGURE_DIR).mkdir(parents=True, exist_ok=True)
    results = read_results(directory)
    manifest = read_manifest(directory)
    lines = _header(manifest)
    for exp in manifest.get("experiments", []):
        lines += _experiment_section(exp, results, out)
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _experiment_section(exp: dict[str, Any], results: pd.DataFrame, out: Path) -> list[str]:
    name = exp["name"]
    lines = [f"## {name}", ""]
    if exp.get("description"):
        lines += [exp["description"].strip(), ""]
    budget, init = exp["budget"], dict(exp["init"])
    if init.get("scheme") != "near-truth":
        init.pop("radius", None)
    seeds = exp["repetitions"]
    lines += [f"{seeds} seed{'s' if seeds != 1 else ''}; budget {budget['max_iter']} "
              f"iterations, {budget['timeout']} s per cell; initialisation "
              + ", ".join(f"{k} {v}" for k, v in init.items()) + ".", ""]
    problems = unsuccessful_cells(results[results["experiment"] == name])
    lines += [f"- {n} cell{'s' if n != 1 else ''} {status}: {reason}"
              for status, reason, n in problems]
    if problems:
        lines.append("")
    ref = exp.get("reference")
    if ref:
        lines += [f"**Source:** {ref['source']}." + (f" {ref['note']}" if ref.get("note")
                                                     else ""), ""]
        rows = reference_rows(exp, results)
        if rows:
            lines += ["| dataset | algorithm | metric | paper | moebench mean ± std (seeds) "
                      "| median [min, max] | 95 % CI | verdict |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in rows:
                paper = f"{r['paper_mean']:.3g}" + (f" ± {r['paper_std']:.2g}"
                                                    if r["paper_std"] is not None else "")
                if r["verdict"] is not None:
                    ours = f"{r['mean']:.3g} ± {r['std']:.2g} ({len(r['values'])})"
                    spread = f"{r['median']:.3g} [{r['min']:.3g}, {r['max']:.3g}]"
                    ci = f"[{r['ci'][0]:.3g}, {r['ci'][1]:.3g}]"
                    word = r["verdict"]
                else:
                    ours, spread, ci, word = "not run", "-", "-", "-"
                at = f" @ it {r['iteration']}" if r["iteration"] is not None else ""
                lines.append(f"| {r['dataset']} | {r['algorithm']} | {r['metric']}{at} | "
                             f"{paper} | {ours} | {spread} | {ci} | {word} |")
            lines.append("")
        claims = claim_rows(exp, results)
        if claims:
            lines += ["| claim | dataset | measured | verdict |", "|---|---|---|---|"]
            for c in claims:
                if c["mean_better"] is None:
                    lines.append(f"| {c['text']} | {c['dataset']} | not run | - |")
                    continue
                at = f" at iteration {c['iteration']}" if c["iteration"] is not None else ""
                word = c["verdict"]
                if c["cut_short"]:
                    word += f" (judged on {c['cut_short']} cell(s) cut short by the timeout)"
                lines.append(
                    f"| {c['text']} | {c['dataset']} | {c['metric']}{at}: {c['better']} "
                    f"{_fmt(c['mean_better'])} vs {c['than']} {_fmt(c['mean_than'])} | "
                    f"{word} |")
            lines.append("")
    for fig in exp.get("figures", []):
        for dataset in exp["datasets"]:
            tables = curve_stats(results, name, dataset, fig["metric"])
            if not tables:
                continue
            title = fig.get("title") or f"{name}: {fig['metric']}"
            file = f"{_safe(name)}__{_safe(dataset)}__{_safe(fig['metric'])}.png"
            _plot(out / FIGURE_DIR / file, tables, fig["metric"], f"{title}\n{dataset}",
                  fig.get("log_y", False))
            lines += [f"![{title}: {dataset}]({FIGURE_DIR}/{file})", ""]
    board = leaderboard(results[results["experiment"] == name], exp["rank_by"])
    for (_, dataset), group in board.groupby(["experiment", "dataset"], sort=False):
        lines += [f"**Leaderboard {dataset}** (ranked by `{exp['rank_by']}`)", "",
                  "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(row) + " |" for row in format_rows(group)]
        lines.append("")
    return lines
