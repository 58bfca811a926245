"""REPRODUCTION.md: paper numbers beside measurements, verdicts, claims and figures."""

from __future__ import annotations

import re
import textwrap

import pytest

from moebench.errors import SuiteError
from moebench.reports.analysis import verdict
from moebench.reports.markdown import write_reproduction
from moebench.runner import run_suite
from moebench.suite import parse_suite, resolve

SUITE = """
name: report-test
seed: 3
repetitions: 2
budget: {max_iter: 8}
experiments:
  - name: tiny
    description: A tiny experiment.
    metrics: [param_error, regressor_fit, train_nll]
    leaderboard: {rank_by: param_error}
    reference:
      source: A paper, Table 9
      values:
        - {dataset: synthetic-moe, algorithm: joint-em, metric: regressor_fit, mean: 0.5,
           std: 0.01}
        - {dataset: synthetic-moe, algorithm: joint-em, metric: param_error, mean: 1.0e-6}
      claims:
        - {text: EM beats GD, better: joint-em, than: gd, metric: train_nll}
        - {text: GD beats EM at iteration 2, better: gd, than: joint-em, metric: train_nll,
           iteration: 2}
    figures:
      - {metric: param_error, log_y: true}
    datasets:
      - name: synthetic-moe
        params: {n: 600, n_test: 100, d: 4, k: 2, sigma: 0.2}
    algorithms:
      - name: joint-em
      - name: gd
        params: {lr: 0.01}
"""


def test_verdicts():
    import numpy as np

    # the 95 % interval of the seeds' mean against the paper's mean ± std
    assert verdict(np.array([0.95, 0.96, 0.94]), 0.93, 0.03, "max") == "consistent"
    assert verdict(np.array([0.99, 0.995, 0.99]), 0.93, 0.03, "max") == "above (better)"
    assert verdict(np.array([0.80, 0.81, 0.79]), 0.93, 0.03, "max") == "below (worse)"
    assert verdict(0.10, 0.50, None, "min") == "below (better)"
    assert verdict(0.51, 0.50, None, "min") == "consistent"  # within 5 % without a std
    # the case: 0.975 and 0.971 get the same verdict
    assert verdict(np.array([0.975, 0.96, 0.99]), 0.96, 0.01, "max") == \
        verdict(np.array([0.971, 0.96, 0.99]), 0.96, 0.01, "max") == "consistent"
    # a wide spread over seeds is consistent with a paper value inside its interval
    assert verdict(np.array([0.5, 0.99, 0.7]), 0.9, 0.01, "max") == "consistent"


def test_report_sets_paper_numbers_beside_measurements(fresh_plugins, tmp_path):
    directory = run_suite(parse_suite(textwrap.dedent(SUITE)), tmp_path)
    report = (directory / "REPRODUCTION.md").read_text()
    assert "A paper, Table 9" in report and "A tiny experiment." in report
    assert "| synthetic-moe | joint-em | regressor_fit | 0.5 ± 0.01 |" in report
    assert " [" in report  # median [min, max] of the seeds
    assert "above (better) |" in report  # EM recovers the regressors far better than 0.5
    assert "| EM beats GD | synthetic-moe | train_nll: joint-em" in report
    lines = [line for line in report.splitlines() if line.startswith("| EM beats GD")]
    assert lines and lines[0].endswith("| holds |")
    lines = [line for line in report.splitlines() if line.startswith("| GD beats EM")]
    assert lines[0].endswith("| does not hold |")
    figures = list((directory / "figures").glob("*.png"))
    assert len(figures) == 1 and figures[0].stat().st_size > 1000
    assert f"](figures/{figures[0].name})" in report
    assert "Machine:" in report and "wall time" in report
    other = write_reproduction(directory, tmp_path / "copy")
    assert other.read_text() == report
    assert (tmp_path / "copy" / "figures" / figures[0].name).is_file()


def test_reference_must_name_real_ids(fresh_plugins):
    text = textwrap.dedent(SUITE).replace("algorithm: joint-em, metric: regressor_fit",
                                          "algorithm: joint-me, metric: regressor_fit")
    with pytest.raises(SuiteError) as info:
        resolve(parse_suite(text))
    ((where, message),) = info.value.problems
    assert where.startswith("experiments[0].reference.values[0].algorithm")
    assert "joint-em" in message


def test_figure_axes_clip_a_blow_up_and_use_quantiles():
    import numpy as np

    from moebench.reports.analysis import Curve, use_log, y_range

    it = np.arange(5.0)

    def curve(name, values):
        v = np.asarray(values, float)
        return Curve(name, it, it * 0.1, v, v * 0.9, v * 1.1, 3)

    good = curve("em", [2.0, 1.0, 0.5, 0.4, 0.4])
    bad = curve("gd[lr=3.0]", [2.0, 50.0, 1e4, 1e6, 1e8])
    assert use_log([good, bad], False)  # > 3 decades, all positive
    lo, hi = y_range([good, bad], True, "min")
    assert hi == 6.0 and lo < 0.4  # bounded by the initial value, not by the blow-up
    assert bad.off_scale and not good.off_scale
    assert y_range([curve("em", [2.0, 1.0, 0.5, 0.4, 0.4])], False, "min") is None
    assert not use_log([curve("nll", [-1.0, -2.0, -3.0, -3.0, -3.0])], True)  # values <= 0


PHASES = """
name: phase-test
seed: 3
repetitions: 2
budget: {max_iter: 4}
experiments:
  - name: tensor
    metrics: [param_error]
    leaderboard: {rank_by: param_error}
    reference:
      source: A paper
      values:
        - {dataset: synthetic-moe, algorithm: tensor-em, metric: param_error, mean: 0.1}
    datasets:
      - name: synthetic-moe
        params: {n: 300, n_test: 60, d: 3, k: 2, sigma: 0.3}
    algorithms:
      - name: tensor-em
      - name: tensor-em
        label: refine-never
        params: {refine: true, tol: 0, gate_max_iter: null}
"""


def test_only_a_phase_that_exists_and_did_not_run_is_marked(fresh_plugins, tmp_path):
    """Plain tensor-em has no joint-EM phase: no ‡; refine that never reached it: ‡, and
    REPRODUCTION.md says what ‡ means."""
    from moebench.reports.results import read_results

    directory = run_suite(parse_suite(textwrap.dedent(PHASES)), tmp_path, html_report=False)
    finals = read_results(directory).query("record == 'final'").set_index("algorithm")
    assert finals.loc["tensor-em", "extra.joint"].isna().all()
    assert (finals.loc["refine-never", "extra.joint"] == 0).all()
    for name in ("REPRODUCTION.md", "leaderboard.md"):
        text = (directory / name).read_text()
        rows = {line.split("|")[2].strip(): line for line in text.splitlines()
                if line.startswith("| ") and ("tensor-em" in line or "refine-never" in line)}
        assert "‡" in rows["refine-never"] and "‡" not in rows["tensor-em"], name
        assert "‡ in some seeds a phase of the algorithm did not run" in text, name


def test_the_reproduction_headline_leads_all_three_outputs(fresh_plugins, tmp_path):
    from click.testing import CliRunner

    from moebench.cli import main

    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    done = CliRunner().invoke(main, ["run", str(suite), "--out", str(tmp_path / "out"),
                                     "--progress", "none"])
    assert done.exit_code == 0, done.output
    # two paper values, two claims (EM beats GD holds; GD beats EM at iteration 2 does not)
    first = done.stdout.splitlines()[0]
    assert first.startswith("reproduction: ")
    expected = first.removeprefix("reproduction: ")
    assert re.fullmatch(r"\d of 2 paper values consistent(, 1 (above|below) \((better|worse)\))*"
                        r"; 1 of 2 claims hold, 1 does not", expected), expected
    assert "1 above (better)" in expected  # EM recovers the regressors far better than 0.5
    directory = tmp_path / "out" / "report-test"
    md = (directory / "REPRODUCTION.md").read_text().splitlines()
    assert md[0].startswith("# Reproduction report") and md[2] == f"**Reproduction: {expected}.**"
    html = (directory / "report.html").read_text()
    top = html[html.index("<header>"):html.index("</header>")]
    assert f'<p class="headline">Reproduction: {expected}.</p>' in top
