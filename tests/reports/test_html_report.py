"""report.html: self-contained, offline, and rendering in a real (headless) browser."""

from __future__ import annotations

import re
import textwrap

import pytest

from moebench import plugins
from moebench.reports.html import HTML_FILE, write_html
from moebench.runner import run_suite
from moebench.suite import parse_suite
from moebench.testing.browser import check_report, missing_reason

SUITE = """
name: html-test
seed: 5
repetitions: 2
budget: {max_iter: 8}
experiments:
  - name: small
    description: A small experiment <b>with markup</b> that must be escaped.
    metrics: [param_error, train_nll]
    leaderboard: {rank_by: param_error}
    reference:
      source: A paper, Table 9
      values:
        - {dataset: "synthetic-moe[k=2]", algorithm: joint-em, metric: param_error, mean: 0.05,
           std: 0.01}
      claims:
        - {text: EM beats GD, better: joint-em, than: gd, metric: train_nll}
    figures:
      - {metric: param_error, log_y: true}
    datasets:
      - name: synthetic-moe
        params: {n: 300, n_test: 100, d: 5, sigma: 0.2}
        grid: {k: [2, 3]}
    algorithms:
      - name: joint-em
      - name: gd
        params: {lr: 0.05}
      - name: gd
        label: gd-unstable
        params: {lr: 5.0}
  - name: faulty
    metrics: [param_error]
    datasets:
      - name: synthetic-moe
        params: {n: 300, n_test: 50, d: 3, k: 2}
      - name: table
        params: {path: /nonexistent/moebench-data.csv, target: y}
    algorithms:
      - name: joint-em
"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    plugins.reset_plugins()
    out = tmp_path_factory.mktemp("html")
    directory = run_suite(parse_suite(textwrap.dedent(SUITE)), out, suite_path="html.yaml")
    plugins.reset_plugins()
    return directory


def test_run_writes_a_self_contained_report(report_dir):
    html = (report_dir / HTML_FILE).read_text()
    # offline: no external script, style, font or image outside plotly.js's own source (whose
    # links are in its modebar's text); the browser test checks that nothing is requested
    start = html.index("<script>")
    ours = html[:start] + html[html.index("</script>", start):]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours)
    assert "<script src" not in html and "@import" not in html
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inlined
    assert "A paper, Table 9" in html and "EM beats GD" in html
    assert "&lt;b&gt;with markup&lt;/b&gt;" in html  # escaped by Jinja2
    for word in ("mean ± std", "median", "median time", "success", "vs time", "manifest",
                 "html.yaml"):
        assert word in html
    # each experiment's failures with their messages, and the manifest
    assert "faulty" in html and "no such file: /nonexistent/moebench-data.csv" in html
    assert "diverged" in html  # gd-unstable blows up: named, not drawn
    # benchopt's view: the training objective's suboptimality and the time to tolerance
    assert "suboptimality of train_nll" in html
    assert html.count("Time to tolerance on synthetic-moe[k=") == 2
    assert "tol 1e-02" in html and "tol 1e-06" in html


def test_report_command_writes_both_reports(report_dir, tmp_path):
    from click.testing import CliRunner

    from moebench.cli import main

    result = CliRunner().invoke(main, ["report", str(report_dir), "--to", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / HTML_FILE).is_file() and (tmp_path / "REPRODUCTION.md").is_file()
    assert write_html(report_dir, tmp_path / "again").is_file()


@pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    result = check_report(report_dir / HTML_FILE, screenshots=tmp_path / "shots")
    # no console error or request, no log tick reading as a bare digit, no tick label cut off
    assert result.problems == [], result.problems
    # 2 datasets x (1 convergence figure + 1 box plot + 1 suboptimality plot, train_nll being
    # the training objective) in 'small', 1 + 1 in 'faulty' (no train_nll)
    assert result.plots == 8
    sub = [p for p in result.plot_axes if p["title"].startswith("suboptimality of train_nll")]
    assert len(sub) == 2 and all(p["x"] == p["y"] == "log" for p in sub), result.plot_axes
    assert result.sorted_ok
    assert len(result.screenshots) == 2
    for shot in result.screenshots:
        assert shot.stat().st_size > 20_000  # a real picture, not a blank page


def plot_page(path, plots: dict, height: int = 440):
    """A page of plotly plots (id -> (traces, layout)), 600 px wide, with plotly.js inlined
    and ``window.moebenchRendered`` set once they are drawn, as report.html does."""
    import json

    from moebench.reports.html import plotly_js

    divs = "".join(f'<div class="plot" id="{k}" style="width:600px;height:{height}px"></div>'
                   for k in plots)
    calls = ",".join(f"Plotly.newPlot('{k}', {json.dumps(t)}, {json.dumps(layout)})"
                     for k, (t, layout) in plots.items())
    path.write_text(f"<html><body>{divs}<script>{plotly_js()}</script><script>"
                    f"Promise.all([{calls}]).then(() => {{ window.moebenchRendered = "
                    f"{len(plots)}; }});</script></body></html>")
    return path


def test_log_axes_label_every_tick_in_full(tmp_path):
    """plotly's own log ticks label minor ticks with bare digits ("1000 5 2 100 5 2"); the
    report's log axes use explicit ticks, and the browser check flags the bare ones."""
    from moebench.reports.figures import log_ticks

    ys = [12.0, 40.0, 300.0, 900.0]
    axes = {"plain": {"type": "log"}, "explicit": {"type": "log", **log_ticks(ys)}}
    assert axes["explicit"]["ticktext"][:4] == ["5", "7", "10", "15"]
    page = plot_page(tmp_path / "ticks.html", {
        k: ([{"x": [1, 2, 3, 4], "y": ys}], {"yaxis": a}) for k, a in axes.items()}, height=400)
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    result = check_report(page)
    assert result.bare_log_ticks and all(t.startswith("plain: ") for t in result.bare_log_ticks)
    assert any("log axis tick without its magnitude" in p for p in result.problems)


def test_the_browser_check_sees_parts_drawn_over_each_other(tmp_path):
    """A legend over the x axis's title is flagged; the report's own layout is not."""

    from moebench.reports.figures import base_layout

    good = base_layout("a title", "iteration", "metric", False)
    bad = {**good, "legend": {"orientation": "h", "x": 0, "y": -0.08, "yanchor": "top"}}
    traces = [{"x": [1, 2, 3], "y": [3, 1, 2], "name": f"algorithm {i}"} for i in range(4)]
    page = plot_page(tmp_path / "overlap.html", {"good": (traces, good), "bad": (traces, bad)})
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    result = check_report(page)
    assert result.overlaps and all(o.startswith("bad: ") for o in result.overlaps)
    assert "bad: x axis title / legend" in result.overlaps


SAME = """
name: same-test
seed: 5
repetitions: 2
budget: {max_iter: 6}
experiments:
  - name: twins
    metrics: [param_error]
    leaderboard: {rank_by: param_error}
    figures:
      - {metric: param_error}
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


def test_a_curve_that_repeats_another_says_so(fresh_plugins, tmp_path):
    """Two algorithms with the same curve would hide one under the other: the second is
    dashed and its legend says "same as" (in report.html, checked in Chromium, and in the
    PNG's legend, which uses the same labels)."""
    from moebench.reports.analysis import curve_stats, same_curves
    from moebench.reports.results import read_results

    directory = run_suite(parse_suite(textwrap.dedent(SAME)), tmp_path)
    curves = curve_stats(read_results(directory), "twins", "synthetic-moe", "param_error")
    assert same_curves(curves) == {"gd-copy": "gd"}
    html = (directory / HTML_FILE).read_text()
    assert "gd-copy (same as gd)" in html
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    result = check_report(directory / HTML_FILE)
    assert result.problems == [], result.problems
    assert "gd-copy (same as gd)" in result.legend_texts
    assert not [t for t in result.legend_texts if t.startswith("joint-em (same")]
