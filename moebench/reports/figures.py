"""The plotly figures of the reports, as plain figure dictionaries (JSON) drawn by plotly.js in
the browser: convergence curves (median and 25-75 % band over seeds, against iteration or time),
box plots of final values per seed, suboptimality curves on log-log axes; one colour and marker
per algorithm (:class:`Styles`) and log axes whose ticks are labelled in full (:func:`log_ticks`).

The numbers come from :mod:`moebench.reports.analysis` and
:mod:`moebench.reports.suboptimality`; this module only draws them.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from typing import Any

import numpy as np
import pandas as pd

from .analysis import Curve, curve_label, same_curves, use_log, y_range
from .results import SUCCESS

#: One colour per algorithm id, the same in every figure of a report (cycled beyond 20).
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#e7969c", "#637939", "#ad494a", "#7b4173", "#3182bd",
    "#e6550d", "#31a354", "#756bb1", "#636363",
]
#: Marker symbols, so that a curve hidden under another stays visible.
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "cross", "star",
           "pentagon", "hexagon", "triangle-left", "triangle-right", "hourglass"]


def json_float(x: Any) -> float | None:
    """A JSON-safe float (``None`` for NaN/inf)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def json_floats(a: np.ndarray) -> list[float | None]:
    return [json_float(v) for v in np.asarray(a, dtype=float)]


def short_number(x: Any, digits: int = 4) -> str:
    v = json_float(x)
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


def rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def figure_title(main: str, sub: str | None = None, width: int = 85) -> str:
    """A figure's title: ``main``, then ``sub`` in small print, wrapped at ``width``
    characters (a long line would run under the modebar)."""
    if not sub:
        return main
    lines = textwrap.wrap(sub, width, break_long_words=False, break_on_hyphens=False)
    return main + "".join(f"<br><sub>{line}</sub>" for line in lines)


def base_layout(title: str, xtitle: str, ytitle: str, log_y: bool) -> dict[str, Any]:
    """The layout every report figure starts from: the legend at the bottom of the figure,
    below the x axis's tick labels and title (axes push the margins they need), the modebar
    down the right margin."""
    return {
        "title": {"text": title, "font": {"size": 13}},
        "xaxis": {"title": {"text": xtitle, "standoff": 6}, "zeroline": False,
                  "automargin": True},
        "yaxis": {"title": {"text": ytitle, "standoff": 6}, "type": "log" if log_y else "linear",
                  "zeroline": False, "automargin": True},
        "legend": {"font": {"size": 10}, "orientation": "h", "x": 0, "xanchor": "left",
                   "y": 0, "yref": "container", "yanchor": "bottom"},
        "margin": {"l": 60, "r": 40, "t": 40, "b": 40},  # the modebar sits in the right one
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
    it, tm = json_floats(c.iteration), json_floats(c.time)
    every = max(1, len(it) // 10)
    sizes = [7 if i % every == 0 or i == len(it) - 1 else 0 for i in range(len(it))]
    band_y = json_floats(c.q75) + json_floats(c.q25)[::-1]
    traces.add({"type": "scatter", "mode": "lines", "x": it + it[::-1], "y": band_y,
                "fill": "toself",
                "fillcolor": rgba(color, 0.18), "line": {"width": 0},
                "hoverinfo": "skip", "showlegend": False, "legendgroup": c.algorithm,
                "name": c.algorithm + " 25-75 %"}, it + it[::-1], tm + tm[::-1])
    traces.add({"type": "scatter", "mode": "lines+markers", "x": it,
                "y": json_floats(c.median), "name": name, "legendgroup": c.algorithm,
                "line": {"color": color, "width": 2, "dash": "dash" if same_as else "solid"},
                "marker": {"symbol": symbol, "size": sizes, "color": color},
                "customdata": tm,
                "hovertemplate": f"{c.algorithm}<br>iteration %{{x}}<br>time "
                                 "%{customdata:.3g} s<br>" + metric
                                 + " %{y:.4g}<extra></extra>"}, it, tm)
    if c.timeouts and it:
        traces.add({"type": "scatter", "mode": "markers", "x": it[-1:],
                    "y": json_floats(c.median[-1:]), "legendgroup": c.algorithm,
                    "showlegend": False, "name": f"{c.algorithm}: timeout",
                    "marker": {"symbol": "x", "size": 13, "color": color,
                               "line": {"width": 1, "color": "#000"}},
                    "hovertemplate": f"{c.algorithm}: {c.timeouts} seed(s) stopped by "
                                     "the timeout<extra></extra>"}, it[-1:], tm[-1:])


def _paper_lines(traces: _Traces, references: list[dict[str, Any]], metric: str,
                 styles: Styles) -> list[dict[str, Any]]:
    """The paper's values of ``metric``: dashed lines with their ± std as dotted lines (the
    shapes returned) and one legend entry each (added to ``traces``)."""
    shapes = []
    for r in references:
        if r["metric"] != metric:
            continue
        color = styles.color(r["algorithm"])
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y",
                       "y0": r["paper_mean"], "y1": r["paper_mean"],
                       "line": {"color": color, "dash": "dash", "width": 1.5}})
        if r["paper_std"]:  # dotted bounds: a filled band would cover the curves
            shapes += [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y",
                        "y0": bound, "y1": bound,
                        "line": {"color": rgba(color, 0.6), "dash": "dot", "width": 1}}
                       for bound in (r["paper_mean"] - r["paper_std"],
                                     r["paper_mean"] + r["paper_std"])]
        traces.add({"type": "scatter", "mode": "lines", "x": [None], "y": [None],
                    "name": f"paper: {r['algorithm']} {short_number(r['paper_mean'], 3)}",
                    "line": {"color": color, "dash": "dash"}}, [None], [None])
    return shapes


def _tick_number(value: float) -> str:
    """``0.001`` -> ``"0.001"``, ``2e-05`` -> ``"2e-5"``: short and never a bare minor digit."""
    text = f"{value:.3g}"
    return text.replace("e-0", "e-").replace("e+0", "e")


def log_ticks(values: list[float], label: Any = _tick_number) -> dict[str, Any]:
    """Explicit ticks for a log axis over ``values``, each labelled in full with ``label``,
    where plotly's own minor ticks read as bare digits ("1 9 8 7 6 5"): 1, 2 and 5 times powers
    of ten (more within two decades; beyond five decades, powers of ten only, at most about
    eight of them)."""
    values = [v for v in values if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
    if not values:
        return {}
    lo, hi = min(values), max(values)
    decades = math.log10(hi / lo)
    steps = (1, 2, 5) if decades > 2 else (1, 1.5, 2, 3, 5, 7)
    stride = 1
    if decades > 5:
        steps, stride = (1,), max(1, math.ceil(decades / 8))
    ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1,
                                          math.ceil(math.log10(hi)) + 1) for m in steps
             if k % stride == 0]
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
    layout = base_layout(title, "iteration", metric + (" (log)" if log else ""), log)
    if clip is not None:
        lo, hi = clip
        layout["yaxis"]["range"] = [math.log10(lo), math.log10(hi)] if log else [lo, hi]
    if log:
        shown = [v for t in traces.data for v in t.get("y") or [] if v is not None]
        layout["yaxis"].update(log_ticks(list(clip) if clip is not None else shown))
    layout["shapes"] = _paper_lines(traces, references, metric, styles)
    _add_toggle(layout, traces)
    return {"data": traces.data, "layout": layout}


#: The x axis title of a curve plotted against time.
TIME_AXIS = "algorithm time (s), median over seeds"


def _add_toggle(layout: dict[str, Any], traces: _Traces, log_x: bool = False) -> None:
    """The "vs iteration" / "vs time" buttons (above the plot, right), which swap the traces'
    x values, the axis title and, on a log x axis, its ticks."""
    axes = {"iteration": {"xaxis.title.text": "iteration"},
            "time": {"xaxis.title.text": TIME_AXIS}}
    if log_x:
        for key, xs in (("iteration", traces.x_iter), ("time", traces.x_time)):
            ticks = log_ticks([v for x in xs for v in x if v is not None])
            axes[key].update({"xaxis.autorange": True, "xaxis.tickvals": ticks.get("tickvals"),
                              "xaxis.ticktext": ticks.get("ticktext")})
        layout["xaxis"].update({"type": "log", "tickmode": "array",
                                "tickvals": axes["iteration"]["xaxis.tickvals"],
                                "ticktext": axes["iteration"]["xaxis.ticktext"]})
    layout["updatemenus"] = [{
        "type": "buttons", "direction": "left", "x": 1, "xanchor": "right", "y": 1.2,
        "yanchor": "top", "showactive": True, "pad": {"r": 4, "t": 0},
        "buttons": [
            {"label": "vs iteration", "method": "update",
             "args": [{"x": traces.x_iter}, axes["iteration"]]},
            {"label": "vs time", "method": "update",
             "args": [{"x": traces.x_time}, axes["time"]]},
        ],
    }]
    layout["margin"]["t"] = 80
    layout["title"]["x"], layout["title"]["xanchor"], layout["title"]["y"] = 0.01, "left", 0.97


def suboptimality_figure(curves: list[Curve], metric: str, dataset: str, floor: float,
                         styles: Styles) -> dict[str, Any] | None:
    """Suboptimality ``f - f*`` of the training objective against iteration or time, on
    log-log axes (benchopt's default view): median and 25-75 % band over seeds per algorithm.

    Parameters
    ----------
    curves
        :func:`moebench.reports.suboptimality.suboptimality_curves` of one dataset.
    metric
        The training objective's name (for the titles).
    dataset
        The dataset configuration's id (for the title).
    floor
        Where a suboptimality of zero is drawn (the log axis has no zero).
    styles
        The report's colours and markers.

    Returns
    -------
    dict or None
        A plotly figure; ``None`` when no algorithm has an iteration after the initial point.
    """
    traces = _Traces()
    shown = []
    for c in curves:
        keep = c.iteration > 0  # the initial point has no place on a log iteration axis
        shown.append(dataclasses.replace(
            c, iteration=c.iteration[keep], time=c.time[keep],
            median=np.maximum(c.median[keep], floor), q25=np.maximum(c.q25[keep], floor),
            q75=np.maximum(c.q75[keep], floor)))
    if not any(len(c.iteration) for c in shown):
        return None
    same = same_curves(shown)
    for c in shown:
        _add_curve(traces, c, "f - f*", styles, same.get(c.algorithm))
    title = figure_title(f"suboptimality of {metric}",
                         f"{dataset}: f - f*, f* the best value any algorithm reached on the "
                         f"same seed; median and 25-75 % band over seeds; 0 is drawn at "
                         f"{_tick_number(floor)}")
    layout = base_layout(title, "iteration", f"{metric} - best (log)", True)
    layout["yaxis"].update(log_ticks([v for t in traces.data for v in t.get("y") or []
                                      if v is not None]))
    _add_toggle(layout, traces, log_x=True)
    layout["margin"]["t"] = 95
    return {"data": traces.data, "layout": layout}


def box_figure(results: pd.DataFrame, experiment: str, dataset: str, metric: str,
               styles: Styles, references: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Box plot with every seed shown of a final metric, per algorithm; the paper's value
    beside its algorithm's box, as a black mark with its ± std as an error bar (a band would
    cover the boxes)."""
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
        color = styles.color(str(algorithm))
        traces.append({"type": "box", "name": str(algorithm),
                       "y": json_floats(values.to_numpy()), "x": [len(order)] * len(values),
                       "width": 0.5,
                       "text": [f"seed {r}" for r in group.loc[values.index, "repetition"]],
                       "boxpoints": "all", "jitter": 0.4, "pointpos": 0,
                       "marker": {"color": color, "size": 6, "symbol":
                                  styles.symbol(str(algorithm))},
                       "line": {"color": color}, "fillcolor": rgba(color, 0.15),
                       "showlegend": False})
        order.append(str(algorithm))
    if not traces:
        return None
    layout = base_layout(f"final {metric} per seed — {dataset}", "", metric, False)
    positive = all(v is not None and v > 0 for t in traces for v in t["y"])
    if positive:
        ys = [v for t in traces for v in t["y"]]
        if max(ys) / min(ys) > 1e3:
            layout["yaxis"]["type"] = "log"
            layout["yaxis"].update(log_ticks(ys))
    paper = [r for r in references if r["metric"] == metric and r["algorithm"] in order
             and r["iteration"] is None]
    if paper:
        traces.append(_paper_marks(paper, order))
        layout["title"]["text"] = figure_title(layout["title"]["text"],
                                               "black: the paper's value ± its std")
        layout["legend"].update({"x": 1, "xanchor": "right", "y": 1.0, "yref": "paper",
                                 "yanchor": "bottom"})
    long_labels = len(order) > 4 or max(len(a) for a in order) > 14
    layout["xaxis"].update({"tickmode": "array", "tickvals": list(range(len(order))),
                            "ticktext": order, "range": [-0.6, len(order) - 0.4],
                            "automargin": True, "tickangle": -25 if long_labels else 0,
                            "showgrid": False})
    layout["yaxis"]["automargin"] = True
    return {"data": traces, "layout": layout}


def _paper_marks(references: list[dict[str, Any]], order: list[str]) -> dict[str, Any]:
    """The paper's values as one trace: a mark right of each algorithm's box, with the std
    as an error bar."""
    return {"type": "scatter", "mode": "markers", "name": "paper (± std)",
            "x": [order.index(r["algorithm"]) + 0.36 for r in references],
            "y": [json_float(r["paper_mean"]) for r in references],
            "error_y": {"type": "data", "array": [json_float(r["paper_std"]) or 0.0
                                                  for r in references],
                        "visible": True, "color": "#000", "thickness": 1.5, "width": 5},
            "marker": {"symbol": "line-ew-open", "size": 16, "color": "#000",
                       "line": {"width": 2.5, "color": "#000"}},
            "text": [f"paper: {r['algorithm']} {short_number(r['paper_mean'], 3)}"
                     + (f" ± {short_number(r['paper_std'], 2)}" if r["paper_std"] else "")
                     for r in references],
            "hoverinfo": "text", "showlegend": True}
