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

import numpy as np
import pandas as pd

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
from .leaderboard import experiment_board, format_rows
from .results import SUCCESS, RunResults, describe_commit, describe_runs

HTML_FILE = "report.html"

#: One colour per algorithm id, the same in every figure of a report (cycled beyond 20).
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#e7969c", "#637939", "#ad494a", "#7b4173", "#3182bd",
    "#e6550d", "#31a354", "#756bb1", "#636363",
]
#: Marker symbols, so that a curve hidden under another stays visible.
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "cross", "star",
           "pentagon", "hexagon", "triangle-left", "triangle-right", "hourglass"]


def _num(x: Any) -> float | None:
    """A JSON-safe float (``None`` for NaN/inf)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _list(a: np.ndarray) -> list[float | None]:
    return [_num(v) for v in np.asarray(a, dtype=float)]


def _fmt(x: Any, digits: int = 4) -> str:
    v = _num(x)
    return "-" if v is None else f"{v:.{digits}g}"


class Styles:
    """Colour and marker of each algorithm id, assigned in order of first appearance."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def index(self, algorithm: str) -> int:
        return self._ids.setdefault(algorithm, len(self._ids))

    def color(self, algorithm: str) -> str:
        return PALETTE[self.index(algorithm) % len(PALETTE)]

    def symbol(self, algorithm: str) -> str:
        return SYMBOLS[self.index(algorithm) % len(SYMBOLS)]

    def legend(self) -> list[dict[str, str]]:
        return [{"algorithm": a, "color": self.color(a)} for a in self._ids]


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _layout(title: str, xtitle: str, ytitle: str, log_y: bool) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 13}},
        "xaxis": {"title": {"text": xtitle}, "zeroline": False},
        "yaxis": {"title": {"text": ytitle}, "type": "log" if log_y else "linear",
                  "zeroline": False},
        "legend": {"font": {"size": 10}, "orientation": "h", "x": 0, "y": -0.18,
                   "yanchor": "top"},
        "margin": {"l": 60, "r": 10, "t": 40, "b": 40},
        "height": 440,
        "template": None,
        "plot_bgcolor": "#ffffff",
        "hovermode": "closest",
        "modebar": {"orientation": "v"},  # down the right side: never over the title
    }


class _Traces:
    """Plotly traces with their x values against iteration and against time (the toggle)."""

    def __init__(self) -> None:
        self.data: list[dict[str, Any]] = []
        self.x_iter: list[Any] = []
        self.x_time: list[Any] = []

    def add(self, trace: dict[str, Any], x_iter: list[Any], x_time: list[Any]) -> None:
        self.data.append(trace)
        self.x_iter.append(x_iter)
        self.x_time.append(x_time)


def _add_curve(traces: _Traces, c: Curve, metric: str, styles: Styles,
               same_as: str | None = None) -> None:
    """The band, median line and timeout X of one algorithm's curve (dashed, and said so in
    the legend, when it repeats ``same_as``'s)."""
    color, symbol = styles.color(c.algorithm), styles.symbol(c.algorithm)
    name = curve_label(c, same_as)
    if not len(c.iteration):  # every seed diverged: a legend entry only
        traces.add({"type": "scatter", "mode": "lines+markers", "x": [None],
                    "y": [None], "name": name, "line": {"color": color, "dash": "dot"},
                    "marker": {"symbol": symbol, "color": color}}, [None], [None])
        return
    it, tm = _list(c.iteration), _list(c.time)
    every = max(1, len(it) // 10)
    sizes = [7 if i % every == 0 or i == len(it) - 1 else 0 for i in range(len(it))]
    band_y = _list(c.q75) + _list(c.q25)[::-1]
    traces.add({"type": "scatter", "mode": "lines", "x": it + it[::-1], "y": band_y,
                "fill": "toself",
                "fillcolor": _rgba(color, 0.18), "line": {"width": 0},
                "hoverinfo": "skip", "showlegend": False, "legendgroup": c.algorithm,
                "name": c.algorithm + " 25-75 %"}, it + it[::-1], tm + tm[::-1])
    traces.add({"type": "scatter", "mode": "lines+markers", "x": it,
                "y": _list(c.median), "name": name, "legendgroup": c.algorithm,
                "line": {"color": color, "width": 2, "dash": "dash" if same_as else "solid"},
                "marker": {"symbol": symbol, "size": sizes, "color": color},
                "customdata": tm,
                "hovertemplate": f"{c.algorithm}<br>iteration %{{x}}<br>time "
                                 "%{customdata:.3g} s<br>" + metric
                                 + " %{y:.4g}<extra></extra>"}, it, tm)
    if c.timeouts and it:
        traces.add({"type": "scatter", "mode": "markers", "x": it[-1:],
                    "y": _list(c.median[-1:]), "legendgroup": c.algorithm,
                    "showlegend": False, "name": f"{c.algorithm}: timeout",
                    "marker": {"symbol": "x", "size": 13, "color": color,
                               "line": {"width": 1, "color": "#000"}},
                    "hovertemplate": f"{c.algorithm}: {c.timeouts} seed(s) stopped by "
                                     "the timeout<extra></extra>"}, it[-1:], tm[-1:])


def _paper_lines(traces: _Traces, references: list[dict[str, Any]], metric: str,
                 styles: Styles) -> list[dict[str, Any]]:
    """The paper's values of ``metric``: dashed lines with their ± std bands (the shapes
    returned) and one legend entry each (added to ``traces``)."""
    shapes = []
    for r in references:
        if r["metric"] != metric:
            continue
        color = styles.color(r["algorithm"])
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y",
                       "y0": r["paper_mean"], "y1": r["paper_mean"],
                       "line": {"color": color, "dash": "dash", "width": 1.5}})
        if r["paper_std"]:
            shapes.append({"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y",
                           "y0": r["paper_mean"] - r["paper_std"],
                           "y1": r["paper_mean"] + r["paper_std"], "line": {"width": 0},
                           "fillcolor": _rgba(color, 0.08)})
        traces.add({"type": "scatter", "mode": "lines", "x": [None], "y": [None],
                    "name": f"paper: {r['algorithm']} {_fmt(r['paper_mean'], 3)}",
                    "line": {"color": color, "dash": "dash"}}, [None], [None])
    return shapes


def _tick_number(value: float) -> str:
    """``0.001`` -> ``"0.001"``, ``2e-05`` -> ``"2e-5"``: short and never a bare minor digit."""
    text = f"{value:.3g}"
    return text.replace("e-0", "e-").replace("e+0", "e")


def log_ticks(values: list[float], label: Any = _tick_number) -> dict[str, Any]:
    """Explicit ticks for a log axis over ``values``: 1, 2 and 5 times powers of ten (more
    within two decades), each labelled in full with ``label``, where plotly's own minor ticks
    read as bare digits ("1 9 8 7 6 5")."""
    values = [v for v in values if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
    if not values:
        return {}
    lo, hi = min(values), max(values)
    steps = (1, 2, 5) if hi / lo > 100 else (1, 1.5, 2, 3, 5, 7)
    ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1,
                                          math.ceil(math.log10(hi)) + 1) for m in steps]
    shown = [t for t in ticks if lo / 2.5 <= t <= hi * 2.5]
    return {"tickmode": "array", "tickvals": shown, "ticktext": [label(t) for t in shown]}


def convergence_figure(curves: list[Curve], metric: str, title: str, log_requested: bool,
                       styles: Styles, references: list[dict[str, Any]],
                       direction: str) -> dict[str, Any]:
    """A plotly figure: median and 25-75 % band per algorithm, x toggled iteration/time.

    Divergent seeds are left out of the band and named in the legend; an axis that one
    algorithm would blow up is clipped (that algorithm is marked "off scale"; ``direction``,
    ``"min"`` or ``"max"``, says which side a blow-up is on); a curve whose seeds hit the
    timeout ends with an X.
    """
    log = use_log(curves, log_requested)
    clip = y_range(curves, log, direction)
    traces = _Traces()
    same = same_curves(curves)
    for c in curves:
        _add_curve(traces, c, metric, styles, same.get(c.algorithm))
    layout = _layout(title, "iteration", metric + (" (log)" if log else ""), log)
    if clip is not None:
        lo, hi = clip
        layout["yaxis"]["range"] = [math.log10(lo), math.log10(hi)] if log else [lo, hi]
    if log:
        shown = [v for t in traces.data for v in t.get("y") or [] if v is not None]
        layout["yaxis"].update(log_ticks(list(clip) if clip is not None else shown))
    layout["shapes"] = _paper_lines(traces, references, metric, styles)
    layout["updatemenus"] = [{
        "type": "buttons", "direction": "left", "x": 1, "xanchor": "right", "y": 1.2,
        "yanchor": "top", "showactive": True, "pad": {"r": 4, "t": 0},
        "buttons": [
            {"label": "vs iteration", "method": "update",
             "args": [{"x": traces.x_iter}, {"xaxis.title.text": "iteration"}]},
            {"label": "vs time", "method": "update",
             "args": [{"x": traces.x_time}, {"xaxis.title.text": "algorithm time (s), median "
                                             "over seeds"}]},
        ],
    }]
    layout["margin"]["t"] = 80
    layout["title"]["x"], layout["title"]["xanchor"], layout["title"]["y"] = 0.01, "left", 0.97
    return {"data": traces.data, "layout": layout}


def box_figure(results: pd.DataFrame, experiment: str, dataset: str, metric: str,
               styles: Styles, references: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Box plot with every seed shown of a final metric, per algorithm; paper values as
    dashed segments with their ± std band."""
    finals = results[(results["experiment"] == experiment) & (results["dataset"] == dataset)
                     & (results["record"] == "final") & results["status"].isin(SUCCESS)]
    if metric not in finals:
        return None
    traces = []
    order: list[str] = []
    for algorithm, group in finals.groupby("algorithm", sort=False):
        values = group[metric].astype(float)
        values = values[np.isfinite(values)]
        if values.empty:
            continue
        order.append(str(algorithm))
        color = styles.color(str(algorithm))
        traces.append({"type": "box", "name": str(algorithm), "y": _list(values.to_numpy()),
                       "x": [str(algorithm)] * len(values),
                       "text": [f"seed {r}" for r in group.loc[values.index, "repetition"]],
                       "boxpoints": "all", "jitter": 0.4, "pointpos": 0,
                       "marker": {"color": color, "size": 6, "symbol":
                                  styles.symbol(str(algorithm))},
                       "line": {"color": color}, "fillcolor": _rgba(color, 0.15),
                       "showlegend": False})
    if not traces:
        return None
    layout = _layout(f"final {metric} per seed — {dataset}", "", metric, False)
    positive = all(v is not None and v > 0 for t in traces for v in t["y"])
    if positive:
        ys = [v for t in traces for v in t["y"]]
        if max(ys) / min(ys) > 1e3:
            layout["yaxis"]["type"] = "log"
            layout["yaxis"].update(log_ticks(ys))
    shapes = []
    for r in references:
        if r["metric"] != metric or r["algorithm"] not in order or r["iteration"] is not None:
            continue
        i = order.index(r["algorithm"])
        color = styles.color(r["algorithm"])
        shapes.append({"type": "line", "xref": "x", "x0": i - 0.45, "x1": i + 0.45,
                       "yref": "y", "y0": r["paper_mean"], "y1": r["paper_mean"],
                       "line": {"color": "#000", "dash": "dash", "width": 2}})
        if r["paper_std"]:
            shapes.append({"type": "rect", "xref": "x", "x0": i - 0.45, "x1": i + 0.45,
                           "yref": "y", "y0": r["paper_mean"] - r["paper_std"],
                           "y1": r["paper_mean"] + r["paper_std"], "line": {"width": 0},
                           "fillcolor": _rgba(color, 0.15)})
    if shapes:
        layout["title"]["text"] += "<br><sub>dashed: the paper's value ± std</sub>"
    layout["shapes"] = shapes
    layout["xaxis"]["type"] = "category"
    return {"data": traces, "layout": layout}


def _leaderboard_rows(board: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    formatted = format_rows(board)  # rank and mean ± std as the leaderboards print them
    for r, row in zip(board.itertuples(index=False), formatted, strict=True):
        score = row[2]
        rows.append({
            "dataset": r.dataset, "rank": None if math.isnan(r.rank) else int(r.rank),
            "rank_text": row[0], "algorithm": r.algorithm,
            "mean": _num(r.mean), "std": _num(r.std), "median": _num(getattr(r, "median",
                                                                              math.nan)),
            "score": score,
            "seeds": int(r.n_seeds), "time": _num(r.median_time),
            "iterations": _num(r.median_iterations), "success": _num(r.success_rate),
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
    wanted = list(exp.get("figures") or [])
    if not wanted and rank_by:
        wanted = [{"metric": rank_by, "title": None, "log_y": False}]
    datasets = []
    for dataset in exp.get("datasets") or []:
        ds_refs = [r for r in refs if r["dataset"] == dataset]
        plots = []
        for fig in wanted:
            curves = curve_stats(results, name, dataset, fig["metric"])
            if curves:
                title = (f"{fig.get('title') or fig['metric']}<br><sub>{dataset}: median "
                         "and 25-75 % band over seeds</sub>")
                plots.append(figures.add(convergence_figure(
                    curves, fig["metric"], title, bool(fig.get("log_y")), styles, ds_refs,
                    run.direction(fig["metric"]))))
        box_metrics = [rank_by] if rank_by else []
        box_metrics += [r["metric"] for r in ds_refs if r["metric"] not in box_metrics]
        for metric in box_metrics:
            fid = figures.add(box_figure(results, name, dataset, metric, styles, ds_refs))
            if fid:
                plots.append(fid)
        if plots:
            datasets.append({"name": dataset, "plots": plots})
    return datasets


def _reference_items(refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's values beside moebench's, formatted for the page."""
    return [{**r, "paper": _fmt(r["paper_mean"], 3) + (
        f" ± {_fmt(r['paper_std'], 2)}" if r["paper_std"] is not None else ""),
        "ours": (f"{_fmt(r['mean'], 3)} ± {_fmt(r['std'], 2)} ({len(r['values'])})"
                 if r["verdict"] else "not run"),
        "spread": (f"{_fmt(r['median'], 3)} [{_fmt(r['min'], 3)}, {_fmt(r['max'], 3)}]"
                   if r["verdict"] else "-"),
        "ci": (f"[{_fmt(r['ci'][0], 3)}, {_fmt(r['ci'][1], 3)}]" if r["verdict"]
               else "-")} for r in refs]


def _claim_items(claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's claims with what was measured, formatted for the page."""
    return [{**c, "measured": (f"{c['better']} {_fmt(c['mean_better'], 3)} vs "
                               f"{c['than']} {_fmt(c['mean_than'], 3)}"
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
        "cut_short": any("†" in r["score"] for r in board_rows),
        "phase_skipped": any("‡" in r["score"] for r in board_rows),
        "reference": exp.get("reference"),
        "references": _reference_items(refs),
        "claims": _claim_items(claims),
        "datasets": datasets,
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
        "plotly_js": _plotly_js(),
    }


@functools.cache
def _plotly_js() -> str:
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
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
