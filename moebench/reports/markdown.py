"""REPRODUCTION.md: a run's measurements beside the numbers and claims of the source papers.

For every experiment of a results folder: the paper's reported values next to moebench's
(mean ± std over seeds) with a one-line verdict, the paper's qualitative claims checked against
the measurements, convergence curves (PNG, drawn with matplotlib) and the leaderboard. The
numbers come from :mod:`moebench.reports.analysis`; this module only draws them.
"""

from __future__ import annotations

import math
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

from .analysis import (
    VERDICT_RULE,
    Curve,
    claim_rows,
    curve_label,
    curve_stats,
    reference_rows,
    run_headline,
    same_curves,
    use_log,
    y_range,
)
from .figures import Styles, log_ticks
from .leaderboard import HEADERS, experiment_board, format_rows, mark_legend
from .markdown_text import markdown_cell
from .phase_report import phase_markdown
from .results import RunResults, describe_commit, describe_runs, unsuccessful_cells

REPORT_FILE = "REPRODUCTION.md"
FIGURE_DIR = "figures"


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


#: Pixel size of the PNG figures, at :data:`FIGURE_DPI`: readable at GitHub's page width.
FIGURE_PIXELS = (1200, 750)
FIGURE_DPI = 150
#: Matplotlib markers in the order of report.html's symbols (``figures.SYMBOLS``).
MARKERS = "osD^vP*ph<>d"
#: Legend columns below a figure; more than :data:`LEGEND_ROWS` rows make the figure taller.
LEGEND_COLUMNS = 3
LEGEND_ROWS = 3
#: At most this many labelled ticks on a log axis (thinned to 1-2-5, 1-3, powers of ten).
MAX_LOG_TICKS = 10


def report_styles(run: RunResults) -> Styles:
    """The colour and marker of each algorithm, assigned as report.html assigns them
    (experiment by experiment, in the order of the results): the same in both reports."""
    styles = Styles()
    frame = run.frame
    for exp in run.manifest.get("experiments") or []:
        for algorithm in frame.loc[frame["experiment"] == exp["name"], "algorithm"].unique():
            styles.index(str(algorithm))
    return styles


def _log_ticks(limits: tuple[float, float]) -> tuple[list[float], list[str]]:
    """The ticks of report.html's log axes (:func:`~.html.log_ticks`: every label a full
    number) within ``limits``, thinned to 1-2-5, then 1-3, then powers of ten when they would
    crowd a PNG (at most :data:`MAX_LOG_TICKS`)."""
    ticks = log_ticks(list(limits))
    shown = [(v, t) for v, t in zip(ticks.get("tickvals", []), ticks.get("ticktext", []),
                                    strict=True) if limits[0] <= v <= limits[1]]
    for mantissas in ((1, 1.5, 2, 3, 5, 7), (1, 2, 5), (1, 3), (1,)):
        kept = [(v, t) for v, t in shown
                if round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6) in mantissas]
        if len(kept) <= MAX_LOG_TICKS:
            break
    kept = kept[::math.ceil(len(kept) / MAX_LOG_TICKS)] if kept else []
    return [v for v, _ in kept], [t for _, t in kept]


def _draw_curves(ax: Any, curves: list[Curve], styles: Styles) -> None:
    """Median and 25-75 % band per algorithm in its report colour; a curve that repeats
    another dashed, and said so (:func:`~.analysis.curve_label`); seeds stopped by the
    timeout end with an X."""
    same = same_curves(curves)
    for c in curves:
        color = styles.color(c.algorithm)
        marker = MARKERS[styles.index(c.algorithm) % len(MARKERS)]
        label = curve_label(c, same.get(c.algorithm))
        if not len(c.iteration):  # every seed diverged: a legend entry only
            ax.plot([], [], color=color, marker=marker, linestyle=":", label=label)
            continue
        ax.plot(c.iteration, c.median, label=label, color=color, marker=marker,
                markevery=max(1, len(c.iteration) // 8), markersize=5, linewidth=1.8,
                linestyle="--" if c.algorithm in same else "-")
        ax.fill_between(c.iteration, c.q25, c.q75, alpha=0.18, color=color, linewidth=0)
        if c.timeouts:
            ax.plot(c.iteration[-1:], c.median[-1:], marker="X", markersize=10, color=color,
                    markeredgecolor="black", linestyle="none")


def _draw_paper(ax: Any, references: list[dict[str, Any]], styles: Styles) -> None:
    """The paper's values: a dashed line in the algorithm's colour with its ± std as dotted
    lines, legend ``paper: ALG VALUE`` (as in report.html, where a band would cover the
    curves). Call once the y limits are final."""
    bottom, top = ax.get_ylim()
    for r in references:
        color, mean, std = styles.color(r["algorithm"]), r["paper_mean"], r["paper_std"]
        ax.axhline(mean, color=color, linestyle=(0, (6, 3)), linewidth=1.4,
                   label=f"paper: {r['algorithm']} {mean:.3g}")
        for bound in ((mean - std, mean + std) if std else ()):
            ax.axhline(bound, color=color, linestyle=":", linewidth=1.0, alpha=0.7,
                       label="_nolegend_")
    ax.set_ylim(bottom, top)


def convergence_plot(curves: list[Curve], metric: str, title: str, log_y: bool,
                     direction: str, styles: Styles,
                     references: list[dict[str, Any]] | None = None) -> Any:
    """A convergence figure of REPRODUCTION.md, drawn by the rules of report.html's.

    The median and 25-75 % band over seeds per algorithm, in the report's colour; a curve
    that repeats another is dashed and labelled "same as"; the paper's values of ``metric``
    as dashed lines with their ± std as dotted lines ("paper: ALG VALUE"); the y range of
    :func:`~.analysis.y_range`, widened to show the paper's values and their ± std; a log axis
    with every tick labelled in full; the legend below the axes, never over a curve.

    Parameters
    ----------
    curves
        :func:`~.analysis.curve_stats` of one dataset and metric.
    metric
        The metric's name (y axis).
    title
        The figure's title (may hold a newline).
    log_y
        Whether the suite asks for a log y axis (:func:`~.analysis.use_log` decides).
    direction
        ``"min"`` or ``"max"``: which way the metric is better (where a blow-up is clipped).
    styles
        The report's colours and markers (:func:`report_styles`).
    references
        :func:`~.analysis.reference_rows` of this dataset; those of ``metric`` are drawn.

    Returns
    -------
    matplotlib.figure.Figure
        :data:`FIGURE_PIXELS` at :data:`FIGURE_DPI` (taller with a long legend).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    refs = [r for r in references or [] if r["metric"] == metric]
    log = use_log(curves, log_y)
    clip = y_range(curves, log, direction)
    entries = len(curves) + len(refs)
    rows = math.ceil(entries / LEGEND_COLUMNS)
    width, height = FIGURE_PIXELS
    height += max(0, rows - LEGEND_ROWS) * 30
    fig = Figure(figsize=(width / FIGURE_DPI, height / FIGURE_DPI), dpi=FIGURE_DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: nothing global, nothing to close
    ax = fig.add_subplot()
    _draw_curves(ax, curves, styles)
    if log:
        ax.set_yscale("log")
    paper = [r["paper_mean"] + k * (r["paper_std"] or 0) for r in refs for k in (-1, 0, 1)]
    paper = [v for v in paper if not log or v > 0]  # the paper's values and their ± std in view
    if clip is not None:
        lo, hi = min([clip[0], *paper]), max([clip[1], *paper])
        pad = (hi / lo) ** 0.03 if log else 0.03 * (hi - lo)
        ax.set_ylim(*((lo / pad, hi * pad) if log else (lo - pad, hi + pad)))
    elif paper:
        ax.update_datalim([(0.0, v) for v in paper], updatex=False)
        ax.autoscale_view(scalex=False)
    if log:
        limits = ax.get_ylim()
        ax.set_yticks(*_log_ticks(limits))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(limits)  # set_yticks widens the view to every tick
    _draw_paper(ax, refs, styles)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{metric}{' (log)' if log else ''}\nmedian, 25-75 % band over seeds")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if entries:
        fig.legend(loc="outside lower center", ncols=min(LEGEND_COLUMNS, entries),
                   fontsize=8.5, frameon=False)
    return fig


def _plot(path: Path, curves: list[Curve], metric: str, title: str, log_y: bool,
          direction: str, styles: Styles, references: list[dict[str, Any]]) -> None:
    """Write :func:`convergence_plot` to ``path`` (PNG)."""
    fig = convergence_plot(curves, metric, title, log_y, direction, styles, references)
    fig.savefig(path, dpi=FIGURE_DPI)


def _table_row(cells: list[str]) -> str:
    """One row of a Markdown table, each cell escaped (:func:`markdown_cell`): a label with
    ``|``, ``<`` or a newline stays in its cell."""
    return "| " + " | ".join(markdown_cell(str(c)) for c in cells) + " |"


def _alt_text(text: str) -> str:
    """``text`` as an image's alt text: a table cell's escapes, and brackets that would end
    the ``![...]`` early."""
    return markdown_cell(text).replace("[", "\\[").replace("]", "\\]")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


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
    runs = describe_runs(manifest)  # a folder several runs wrote into (subset runs)
    held = [runs[0], "", *(f"- {line}" for line in runs[1:]), ""] if runs else []
    return [
        f"# Reproduction report: `{manifest.get('suite', '?')}`",
        "",
        f"Generated by moebench {manifest.get('moebench', '?')} ({describe_commit(manifest)}) "
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
        *held,
        VERDICT_RULE,
        "",
    ]


def write_reproduction(run: RunResults | str | Path, out: str | Path | None = None) -> Path:
    """Write ``REPRODUCTION.md`` and its figures for a results folder.

    Parameters
    ----------
    run
        A loaded results folder (:class:`RunResults`), or the path of one written by
        ``moebench run`` (loaded once).
    out
        Where to write (default: the results folder); figures go to ``<out>/figures/``.

    Returns
    -------
    Path
        The report file.
    """
    run = RunResults.of(run)
    out = Path(out) if out is not None else run.directory
    (out / FIGURE_DIR).mkdir(parents=True, exist_ok=True)
    lines = _header(run.manifest)
    styles = report_styles(run)
    headline = run_headline(run)
    if headline:  # the line a researcher wants first, right under the title
        lines[1:1] = ["", f"**Reproduction: {headline}.**"]
    for exp in run.manifest.get("experiments", []):
        lines += _experiment_section(exp, run, out, styles)
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _experiment_section(exp: dict[str, Any], run: RunResults, out: Path,
                        styles: Styles) -> list[str]:
    name = exp["name"]
    results = run.frame
    lines = [f"## {markdown_cell(name)}", ""]
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
    lines += [f"- {n} cell{'s' if n != 1 else ''} {status}: {markdown_cell(reason)}"
              for status, reason, n in problems]
    if problems:
        lines.append("")
    ref = exp.get("reference")
    refs = reference_rows(exp, results, run.directions) if ref else []
    if ref:
        note = f" {markdown_cell(ref['note'])}" if ref.get("note") else ""
        lines += [f"**Source:** {markdown_cell(ref['source'])}.{note}", ""]
        lines += _reference_table(refs)
        lines += _claim_table(claim_rows(exp, results, run.directions))
    lines += phase_markdown(exp, run, out, FIGURE_DIR)
    lines += _figures(exp, run, out, styles, refs)
    board = experiment_board(run, name, exp["rank_by"])
    for (_, dataset), group in board.groupby(["experiment", "dataset"], sort=False):
        lines += [f"**Leaderboard {markdown_cell(dataset)}** (ranked by `{exp['rank_by']}`)",
                  "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += [_table_row(row) for row in format_rows(group)]
        lines += [x for line in mark_legend(group) for x in ("", line)]
        lines.append("")
    return lines


def _reference_table(rows: list[dict[str, Any]]) -> list[str]:
    """The paper's values beside moebench's (:func:`~.analysis.reference_rows`)."""
    if not rows:
        return []
    lines = ["| dataset | algorithm | metric | paper | moebench mean ± std (seeds) "
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
        lines.append(_table_row([r["dataset"], r["algorithm"], f"{r['metric']}{at}", paper,
                                 ours, spread, ci, word]))
    lines.append("")
    return lines


def _claim_table(claims: list[dict[str, Any]]) -> list[str]:
    """The paper's claims checked per dataset (:func:`~.analysis.claim_rows`)."""
    if not claims:
        return []
    lines = ["| claim | dataset | measured | verdict |", "|---|---|---|---|"]
    for c in claims:
        if c["mean_better"] is None:
            lines.append(_table_row([c["text"], c["dataset"], "not run", "-"]))
            continue
        at = f" at iteration {c['iteration']}" if c["iteration"] is not None else ""
        word = c["verdict"]
        if c["cut_short"]:
            word += f" (judged on {c['cut_short']} cell(s) cut short by the timeout)"
        measured = (f"{c['metric']}{at}: {c['better']} {_fmt(c['mean_better'])} vs "
                    f"{c['than']} {_fmt(c['mean_than'])}")
        lines.append(_table_row([c["text"], c["dataset"], measured, word]))
    lines.append("")
    return lines


def _figures(exp: dict[str, Any], run: RunResults, out: Path, styles: Styles,
             refs: list[dict[str, Any]]) -> list[str]:
    """Draw the experiment's convergence figures into ``<out>/figures/``, with the paper's
    values ``refs`` of their dataset and metric; their image links."""
    name, lines = exp["name"], []
    for fig in exp.get("figures", []):
        if fig.get("kind") == "phase":
            continue
        for dataset in exp["datasets"]:
            tables = curve_stats(run.frame, name, dataset, fig["metric"])
            if not tables:
                continue
            title = fig.get("title") or f"{name}: {fig['metric']}"
            file = f"{_safe(name)}__{_safe(dataset)}__{_safe(fig['metric'])}.png"
            _plot(out / FIGURE_DIR / file, tables, fig["metric"], f"{title}\n{dataset}",
                  fig.get("log_y", False), run.direction(fig["metric"]), styles,
                  [r for r in refs if r["dataset"] == dataset])
            lines += [f"![{_alt_text(f'{title}: {dataset}')}]({FIGURE_DIR}/{file})", ""]
    return lines
