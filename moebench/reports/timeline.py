"""The history page: every measure of a suite over commits, one self-contained HTML file.

Like ``asv publish``'s graphs: per series (machine, suite, run options) and per experiment, one
plotly figure per measure (time per iteration first, then each metric the run recorded),
commits on a categorical x axis in commit order (labelled with their short hash; the hover
gives hash, date and subject), one line per configuration (dataset and algorithm with their
parameters): the median over seeds with its 25-75 % band. A commit where a configuration was
not run or did not succeed leaves a gap in its line.

Everything is inlined (plotly.js, styles, the figures), so the page opens with no network; the
figures hold one summary per commit and configuration, never iteration rows. The values come
from :func:`moebench.reports.measures.seed_measures` (one value per seed) and which way a
metric is better from the directions recorded with the results, never from the plugins. The
page is rendered from ``templates/timeline.html.j2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .figures import SYMBOLS, Styles, base_layout, figure_title, json_float, log_ticks, rgba
from .html import plotly_js
from .measures import CONFIG, TIME, Clock, clock_available, format_seconds, seed_measures
from .results import SUCCESS, RunResults

TIMELINE_FILE = "history.html"
#: The summaries of a measure over the seeds of one configuration at one commit.
STATS = ["median", "q25", "q75", "min", "max", "seeds"]
#: Line dash per dataset of an experiment (colours are per algorithm, as in report.html).
DASHES = ["solid", "dot", "dash", "longdash", "dashdot", "longdashdot"]
CLOCK_NAMES = {"cpu": "cpu clock", "wall": "wall clock"}


@dataclass
class TimelineRun:
    """One results folder of the history and the commit, machine and options behind it."""

    commit: str
    commit_time: int
    subject: str
    machine: str
    suite: str
    variant: str
    options: list[str]
    run: RunResults
    _stats: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False,
                                            compare=False)

    @property
    def short(self) -> str:
        """The commit's first 8 characters."""
        return self.commit[:8]

    @property
    def date(self) -> str:
        """The commit's date, UTC, to the minute."""
        return datetime.fromtimestamp(self.commit_time, UTC).strftime("%Y-%m-%d %H:%M UTC")

    @property
    def series(self) -> tuple[str, str, str]:
        """``(machine, suite, variant)``: the runs comparable over commits."""
        return (self.machine, self.suite, self.variant)

    def stats(self, clock: Clock = "cpu") -> pd.DataFrame:
        """:func:`measure_stats` of this run (computed once per clock)."""
        if clock not in self._stats:
            self._stats[clock] = measure_stats(self.run, clock)
        return self._stats[clock]


def measure_stats(run: RunResults, clock: Clock = "cpu") -> pd.DataFrame:
    """Every measure of every configuration of ``run`` summarised over its seeds.

    Parameters
    ----------
    run
        A loaded results folder.
    clock
        The clock of the time measure.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`~moebench.reports.measures.CONFIG`, ``measure`` and :data:`STATS`
        (median, quartiles, min, max and the number of seeds with a finite value), one row per
        configuration and measure with at least one such seed.
    """
    seeds = seed_measures(run, clock=clock)
    seeds = seeds[np.isfinite(seeds["value"].astype(float))]
    if seeds.empty:
        return pd.DataFrame(columns=[*CONFIG, "measure", *STATS])
    values = seeds.assign(value=seeds["value"].astype(float)).groupby(
        [*CONFIG, "measure"], sort=False)["value"]
    out = pd.concat({"median": values.median(), "q25": values.quantile(0.25),
                     "q75": values.quantile(0.75), "min": values.min(), "max": values.max(),
                     "seeds": values.count()}, axis=1)
    return out.reset_index()


def _state(run: TimelineRun, clock: Clock) -> str:
    """A run's state for the commits table: the manifest's, cells by status, clock notes."""
    frame = run.run.frame
    finals = frame[frame["record"] == "final"] if "record" in frame else frame.iloc[:0]
    counts = finals["status"].value_counts() if "status" in finals else pd.Series(dtype=int)
    ok = int(counts[counts.index.isin(SUCCESS)].sum())
    failed = ", ".join(f"{n} {s}" for s, n in counts.items() if s not in SUCCESS)
    text = f"{run.run.manifest.get('state', '?')}: {ok}/{len(finals)} cells succeeded"
    if failed:
        text += f" ({failed})"
    if not clock_available(run.run, clock):
        text += f"; no {CLOCK_NAMES[clock]} times recorded"
    return text


@dataclass
class _Line:
    """One configuration's values over the commits of a series."""

    label: str
    algorithm: str
    dataset: int  # index of its dataset in the experiment (dash and marker)
    points: dict[int, Mapping[str, Any]] = field(default_factory=dict)  # commit index -> STATS


def _lines(stats: pd.DataFrame, measure: str) -> list[_Line]:
    """The lines of one measure of one experiment (``stats``: the series' rows with a
    ``commit`` index column), labelled by algorithm and dataset (with their parameters where
    two configurations would share a label)."""
    rows = stats[stats["measure"] == measure]
    configs = rows[CONFIG].drop_duplicates().itertuples(index=False, name=None)
    configs = list(configs)
    datasets = list(dict.fromkeys(c[1] for c in configs))
    names = {c: (c[2] if len(datasets) == 1 else f"{c[2]}, {c[1]}") for c in configs}
    clashes = {n for n in names.values() if list(names.values()).count(n) > 1}
    lines = {}
    for c in configs:
        label = names[c]
        if label in clashes:
            label += f" ({c[3]}; {c[4]})"
        lines[c] = _Line(label, c[2], datasets.index(c[1]))
    for r in rows.to_dict("records"):
        lines[tuple(r[k] for k in CONFIG)].points[int(r["commit"])] = r
    return list(lines.values())


def _hover(run: TimelineRun, line: _Line, p: Mapping[str, Any], fmt: Any) -> str:
    """The hover text of one point (escaped: plotly reads its text as a little HTML)."""
    return "<br>".join([
        f"<b>{escape(line.label)}</b>", f"{run.commit} ({run.date})", escape(run.subject),
        f"median {fmt(p['median'])}, 25-75 % [{fmt(p['q25'])}, {fmt(p['q75'])}]",
        f"min {fmt(p['min'])}, max {fmt(p['max'])}, {int(p['seeds'])} seed(s)"])


def _segments(present: list[int]) -> list[list[int]]:
    """Runs of consecutive commit indices."""
    out: list[list[int]] = []
    for i in present:
        if out and out[-1][-1] == i - 1:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _line_traces(line: _Line, runs: list[TimelineRun], styles: Styles,
                 fmt: Any) -> list[dict[str, Any]]:
    """The 25-75 % band (one shape per run of commits without a gap) and the median line of
    one configuration; a point with no neighbour gets its band as an error bar."""
    color, x = styles.color(line.algorithm), [r.short for r in runs]
    traces = []
    segments = _segments(sorted(line.points))
    lone = {s[0] for s in segments if len(s) == 1}
    for seg in (s for s in segments if len(s) > 1):
        xs = [x[i] for i in seg]
        traces.append({"type": "scatter", "mode": "lines", "x": xs + xs[::-1],
                       "y": [json_float(line.points[i]["q75"]) for i in seg]
                       + [json_float(line.points[i]["q25"]) for i in seg[::-1]],
                       "fill": "toself", "fillcolor": rgba(color, 0.18), "line": {"width": 0},
                       "hoverinfo": "skip", "showlegend": False, "legendgroup": line.label,
                       "name": escape(line.label) + " 25-75 %"})
    med = [json_float(line.points[i]["median"]) if i in line.points else None
           for i in range(len(x))]

    def bar(key: str) -> list[float | None]:  # distance from the median, lone points only
        return [abs((json_float(line.points[i][key]) or 0.0) - (med[i] or 0.0)) if i in lone
                else None for i in range(len(x))]

    traces.append({
        "type": "scatter", "mode": "lines+markers", "x": x, "y": med, "connectgaps": False,
        "name": escape(line.label), "legendgroup": line.label,
        "line": {"color": color, "width": 2, "dash": DASHES[line.dataset % len(DASHES)]},
        "marker": {"color": color, "size": 7, "symbol": SYMBOLS[line.dataset % len(SYMBOLS)]},
        "hovertext": [_hover(runs[i], line, line.points[i], fmt) if i in line.points else ""
                      for i in range(len(x))],
        "hoverinfo": "text",
        **({"error_y": {"type": "data", "symmetric": False, "array": bar("q75"),
                        "arrayminus": bar("q25"), "color": color, "thickness": 1.5,
                        "width": 4}} if lone else {}),
    })
    return traces


def _direction(runs: list[TimelineRun], measure: str) -> str:
    """Which way ``measure`` is better, as the newest run recording it says."""
    if measure == TIME:
        return "lower is better"
    for r in reversed(runs):
        direction = r.run.directions.get(measure)
        if direction in ("min", "max"):
            return "lower is better" if direction == "min" else "higher is better"
    return "direction not recorded with the results"


def measure_figure(lines: list[_Line], runs: list[TimelineRun], measure: str, clock: Clock,
                   styles: Styles) -> dict[str, Any]:
    """A plotly figure of one measure over the commits of a series (``runs``, in order)."""
    is_time = measure == TIME
    fmt = format_seconds if is_time else (lambda v: "-" if json_float(v) is None else f"{v:.4g}")
    name = f"time per iteration ({CLOCK_NAMES[clock]})" if is_time else measure
    title = figure_title(escape(name), f"{_direction(runs, measure)}; median over seeds with "
                         "the 25-75 % band")
    ytitle = f"seconds per iteration ({CLOCK_NAMES[clock]})" if is_time else escape(measure)
    layout = base_layout(title, "commit (oldest first)", ytitle, is_time)
    shorts = [r.short for r in runs]
    layout["xaxis"].update({"type": "category", "categoryorder": "array",
                            "categoryarray": shorts, "tickangle": -40 if len(runs) > 6 else 0})
    layout["margin"]["t"] = 60
    layout["legend"]["y"] = -0.25
    layout["height"] = 460
    data = [t for line in lines for t in _line_traces(line, runs, styles, fmt)]
    if is_time:  # "2ms", "500μs": every label with its unit (plotly's minor log ticks drop it)
        layout["yaxis"].update(_seconds_ticks(data))
    return {"data": data, "layout": layout}


def _seconds_ticks(data: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`~moebench.reports.html.log_ticks` over the values drawn, labelled with their
    unit."""
    return log_ticks([v for trace in data for v in trace.get("y") or []
                      if isinstance(v, (int, float))], format_seconds)


def _series_section(runs: list[TimelineRun], clock: Clock, styles: Styles,
                    figures: list[dict[str, Any]]) -> dict[str, Any]:
    """One series' part of the page: per experiment, one figure per measure (time first)."""
    parts = []
    for i, r in enumerate(runs):
        stats = r.stats(clock)
        if not stats.empty:
            parts.append(stats.assign(commit=i))
    stats = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=[*CONFIG, "measure", *STATS, "commit"])
    experiments = []
    for experiment, rows in stats.groupby("experiment", sort=False):
        for alg in rows["algorithm"].unique():
            styles.index(str(alg))
        measures = list(dict.fromkeys(rows["measure"]))
        measures.sort(key=lambda m: m != TIME)  # time first, then the metrics as recorded
        plots = []
        for measure in measures:
            figures.append(measure_figure(_lines(rows, measure), runs, measure, clock, styles))
            plots.append(f"fig-{len(figures) - 1}")
        experiments.append({"name": str(experiment), "plots": plots})
    machine, suite, variant = runs[0].series
    return {"machine": machine, "suite": suite, "variant": variant,
            "anchor": "series-" + "".join(c if c.isalnum() else "-"
                                          for c in f"{machine}-{suite}-{variant}"),
            "options": " ".join(runs[0].options), "commits": len(runs),
            "experiments": experiments}


def build_timeline_context(runs: list[TimelineRun], clock: Clock = "cpu",
                           title: str = "moebench history",
                           machines: Mapping[str, Mapping[str, Any]] | None = None,
                           command: str = "moebench history") -> dict[str, Any]:
    """Everything ``timeline.html.j2`` needs (see :func:`write_timeline`)."""
    runs = sorted(runs, key=lambda r: (r.commit_time, r.commit))
    series: dict[tuple[str, str, str], list[TimelineRun]] = {}
    for r in runs:
        series.setdefault(r.series, []).append(r)
    styles, figures = Styles(), []
    order = sorted(series, key=lambda s: (s[0], s[1], s[2] != "default", s[2]))
    sections = [_series_section(series[s], clock, styles, figures) for s in order]
    facts = machines or {}
    return {
        "title": title, "clock": CLOCK_NAMES[clock], "command": command,
        "machines": [{"name": m, "facts": [(k, v) for k, v in (facts.get(m) or {}).items()
                                           if v not in (None, "")]}
                     for m in dict.fromkeys(r.machine for r in runs)],
        "commits": [{"commit": r.commit, "short": r.short, "date": r.date, "subject": r.subject,
                     "machine": r.machine, "suite": r.suite, "variant": r.variant,
                     "state": _state(r, clock)} for r in runs],
        "sections": sections, "figures": figures, "plotly_js": plotly_js(),
    }


def render_timeline(context: dict[str, Any]) -> str:
    """The HTML page of a :func:`build_timeline_context` result."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("moebench.reports", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("timeline.html.j2").render(**context)


def write_timeline(runs: list[TimelineRun], out: str | Path, clock: Clock = "cpu",
                   title: str = "moebench history",
                   machines: Mapping[str, Mapping[str, Any]] | None = None,
                   command: str | None = None) -> Path:
    """Write the history page of ``runs``.

    Parameters
    ----------
    runs
        The results folders, any order (drawn in commit order, one series per machine, suite
        and variant).
    out
        The HTML file to write (a folder: ``history.html`` in it).
    clock
        The clock of the time measure: ``"cpu"`` or ``"wall"``.
    title
        The page's title.
    machines
        Facts recorded per machine (``History.machine_facts``), shown in the header.
    command
        How to regenerate the page (shown in the header).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(out)
    if path.is_dir():
        path = path / TIMELINE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    page = render_timeline(build_timeline_context(
        runs, clock, title, machines, command or f"moebench history --out {path}"))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
