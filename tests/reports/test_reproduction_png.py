"""REPRODUCTION.md's PNG figures follow report.html's rules, at a size GitHub shows readably.

The paper's values are dashed reference lines in the algorithm's colour with their ± std
as dotted lines and a "paper: ALG VALUE" legend entry; a curve that repeats another is
dashed and says "same as"; log axes label every tick in full; each algorithm has
report.html's colour; the legend sits below the axes, off the curves.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
from matplotlib.colors import to_hex

from moebench import plugins
from moebench.reports.analysis import Curve, curve_stats, reference_rows
from moebench.reports.figures import Styles
from moebench.reports.html import build_context
from moebench.reports.markdown import (
    FIGURE_PIXELS,
    MAX_LOG_TICKS,
    _log_ticks,
    convergence_plot,
    report_styles,
    write_reproduction,
)
from moebench.reports.results import RunResults
from moebench.runner import run_suite
from moebench.suite import parse_suite

SUITE = """
name: png-test
seed: 3
repetitions: 2
budget: {max_iter: 6}
experiments:
  - name: twins
    metrics: [param_error, regressor_fit]
    leaderboard: {rank_by: param_error}
    reference:
      source: A paper
      values:
        - {dataset: synthetic-moe, algorithm: joint-em, metric: param_error, mean: 0.05,
           std: 0.02}
        - {dataset: synthetic-moe, algorithm: gd, metric: regressor_fit, mean: 0.9}
    figures:
      - {metric: param_error, log_y: true}
      - {metric: regressor_fit}
    datasets:
      - name: synthetic-moe
        params: {n: 300, n_test: 60, d: 3, k: 2, sigma: 0.3}
    algorithms:
      - name: gd
        params: {lr: 0.05}
      - name: gd
        label: gd-copy
        params: {lr: 0.05, tol: 1.0e-15}  # another cell, the same steps within 6 iterations
      - name: joint-em
"""

#: A tick label written in full: "0.05", "2", "1e-6", "1.5e3" (never a bare minor digit
#: among unlabelled powers, never "$\\mathdefault{10^{-1}}$").
FULL_NUMBER = re.compile(r"\d+(\.\d+)?(e-?\d+)?")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunResults:
    plugins.reset_plugins()
    try:
        directory = run_suite(parse_suite(textwrap.dedent(SUITE)),
                              tmp_path_factory.mktemp("png"), html_report=False)
    finally:
        plugins.reset_plugins()
    return RunResults.of(directory)


def _figure(run: RunResults, metric: str, log_y: bool):
    exp = run.manifest["experiments"][0]
    curves = curve_stats(run.frame, "twins", "synthetic-moe", metric)
    refs = reference_rows(exp, run.frame, run.directions)
    return convergence_plot(curves, metric, "title", log_y, run.direction(metric),
                            report_styles(run), refs)


def test_the_pngs_are_large(run, tmp_path):
    from matplotlib.image import imread

    report = write_reproduction(run, tmp_path).read_text()
    files = sorted((tmp_path / "figures").glob("*.png"))
    assert [f.name for f in files] == ["twins__synthetic-moe__param_error.png",
                                       "twins__synthetic-moe__regressor_fit.png"]
    for file in files:
        assert f"](figures/{file.name})" in report
        height, width = imread(file).shape[:2]
        assert (width, height) == FIGURE_PIXELS == (1200, 750)


def test_the_paper_value_is_a_reference_line_in_the_algorithms_colour(run):
    fig = _figure(run, "param_error", True)
    (ax,) = fig.axes
    colors = build_context(run)["colors"]  # report.html's colour of each algorithm
    lines = {line.get_label(): line for line in ax.get_lines()}
    paper = lines["paper: joint-em 0.05"]
    assert paper.get_linestyle() == "--" and list(paper.get_ydata()) == [0.05, 0.05]
    assert to_hex(paper.get_color()) == colors["joint-em"]
    bounds = sorted(line.get_ydata()[0] for line in ax.get_lines()
                    if line.get_linestyle() == ":" and to_hex(line.get_color())
                    == colors["joint-em"])
    assert np.allclose(bounds, [0.03, 0.07])  # the ± std, dotted (a band would hide curves)
    lo, hi = ax.get_ylim()
    assert lo < 0.03 < 0.07 < hi  # the paper's ± std is in view
    for name in ("gd", "gd-copy (same as gd)", "joint-em"):
        assert to_hex(lines[name].get_color()) == colors[name.split(" ")[0]]
    # regressor_fit: gd's value, without a std, and no dotted bounds
    ax = _figure(run, "regressor_fit", False).axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "paper: gd 0.9" in labels and not [x for x in labels if "joint-em 0.05" in x]


def test_a_repeated_curve_is_dashed_and_the_legend_is_below_the_axes(run):
    fig = _figure(run, "param_error", True)
    (ax,) = fig.axes
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["gd", "gd-copy (same as gd)", "joint-em", "paper: joint-em 0.05"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["gd-copy (same as gd)"].get_linestyle() == "--"
    assert lines["gd"].get_linestyle() == lines["joint-em"].get_linestyle() == "-"
    fig.canvas.draw()
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.y1 <= axes_box.y0  # below the axes: it covers no curve


def test_log_axes_label_every_tick_in_full(run):
    fig = _figure(run, "param_error", True)
    (ax,) = fig.axes
    fig.canvas.draw()
    assert ax.get_yscale() == "log"
    lo, hi = ax.get_ylim()
    major = [(t.get_loc(), t.label1.get_text()) for t in ax.yaxis.get_major_ticks()]
    shown = [text for loc, text in major if lo <= loc <= hi]
    assert len(shown) >= 3 and all(FULL_NUMBER.fullmatch(t) for t in shown), shown
    assert not [t.label1.get_text() for t in ax.yaxis.get_minor_ticks() if t.label1.get_text()]


@pytest.mark.parametrize("limits", [(0.04, 3.0), (1e-12, 10.0), (0.5, 0.9), (12.0, 900.0),
                                    (1e-3, 1e3), (2e-7, 3e-7)])
def test_log_ticks_are_full_numbers_in_view_and_not_crowded(limits):
    values, labels = _log_ticks(limits)
    assert values and len(values) == len(labels) <= MAX_LOG_TICKS
    assert all(limits[0] <= v <= limits[1] for v in values)
    assert all(FULL_NUMBER.fullmatch(t) for t in labels), labels
    if limits[1] / limits[0] > 10:
        assert len(values) >= 3


def test_a_clipped_axis_still_shows_the_paper_value():
    it = np.arange(5.0)

    def curve(name, values):
        v = np.asarray(values, float)
        return Curve(name, it, it * 0.1, v, v * 0.9, v * 1.1, 3)

    curves = [curve("em", [2.0, 1.0, 0.5, 0.4, 0.4]), curve("gd", [2.0, 50, 1e4, 1e6, 1e8])]
    refs = [{"algorithm": "em", "metric": "m", "paper_mean": 1e-3, "paper_std": None}]
    ax = convergence_plot(curves, "m", "t", True, "min", Styles(), refs).axes[0]
    lo, hi = ax.get_ylim()
    assert lo < 1e-3 and hi < 100  # the paper's line in view; gd's blow-up still clipped
    labels = [line.get_label() for line in ax.get_lines()]
    assert "gd (off scale)" in labels and "paper: em 0.001" in labels
