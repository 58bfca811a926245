"""moebench compare: a slowed algorithm is flagged, an unchanged rerun is not."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner
from conftest import fake_distribution

from moebench import plugins
from moebench.cell.rows import rows_to_frame
from moebench.cli import main
from moebench.reports.compare import compare_runs, regressions
from moebench.runner import run_suite
from moebench.suite import parse_suite

# An algorithm whose speed changes with a file beside it, not with its parameters: the cell
# configurations (and so the matching across runs) stay the same, as after a code change. (A
# file, not an environment variable: the worker pool is reused while the environment stays.)
SLEEPY = '''
    import time
    from pathlib import Path

    from moebench import Algorithm, hookimpl
    from moebench.algorithm import Iterate


    class Sleepy(Algorithm):
        """Gradient-free steps that shrink the gate; sleeps (delay.txt beside it) s per step."""
        name = "sleepy"
        summary = "sleeps between iterations"

        def fit(self, problem, init, callback):
            delay = float(Path(__file__).with_name("delay.txt").read_text())
            params = dict(init)
            t = 0
            while callback(Iterate(t, params)):
                time.sleep(delay)
                params = {k: v * 0.9 if k == "W" else v for k, v in params.items()}
                t += 1
            return params


    @hookimpl
    def register_algorithms(register):
        register(Sleepy)
'''

SUITE = """
name: cmp
seed: 11
repetitions: 3
budget: {max_iter: 8}
metrics: [param_error, train_nll]
datasets:
  - name: synthetic-moe
    params: {n: 300, n_test: 50, d: 3, k: 2, sigma: 0.3}
algorithms:
  - name: sleepy
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    site = fake_distribution(tmp_path_factory.mktemp("site"), "mb-test-sleepy",
                             {"mb_test_sleepy": SLEEPY}, {"sleepy": "mb_test_sleepy"})
    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        plugins.reset_plugins()
        suite = parse_suite(textwrap.dedent(SUITE))
        with_em = parse_suite(textwrap.dedent(SUITE) + "  - name: joint-em\n")
        found = {}
        for name, delay, which in (("base", "0.004", suite), ("same", "0.004", with_em),
                                   ("slow", "0.03", suite)):
            (site / "delay.txt").write_text(delay)
            found[name] = run_suite(which, out / name, html_report=False)
        plugins.reset_plugins()
    return found


def test_slowed_algorithm_is_flagged(runs):
    changes = compare_runs(runs["base"], runs["slow"], factor=1.5)
    worse = regressions(changes)
    assert [(c.algorithm, c.measure) for c in worse] == [("sleepy", "time per iteration")]
    (slow,) = worse
    assert slow.ratio > 3 and slow.p_value < 0.01 and slow.pairs == 24  # 3 seeds x 8 steps
    # the metrics did not change: same data, same steps
    assert all(c.verdict == "unchanged" for c in changes if c.measure in ("param_error",
                                                                         "train_nll"))


def test_unchanged_rerun_is_not_flagged(runs):
    changes = compare_runs(runs["base"], runs["same"], factor=1.5)
    assert regressions(changes) == []
    verdicts = {(c.algorithm, c.measure): c.verdict for c in changes}
    assert verdicts[("sleepy", "param_error")] == "unchanged"
    assert verdicts[("joint-em", "cells")] == "only in B"
    order = [c.verdict for c in changes]
    assert order == sorted(order, key=["worse", "better", "unchanged", "only in A",
                                       "only in B"].index)


def test_compare_command_exit_codes(runs):
    runner = CliRunner()
    slow = runner.invoke(main, ["compare", str(runs["base"]), str(runs["slow"]), "--factor",
                                "1.5", "--fail-on-regression"])
    assert slow.exit_code == 1, slow.output
    assert "worse" in slow.output and "sleepy" in slow.output and "regression" in slow.output
    same = runner.invoke(main, ["compare", str(runs["base"]), str(runs["same"]), "--factor",
                                "1.5", "--fail-on-regression", "--metric", "time"])
    assert same.exit_code == 0, same.output
    assert "worse: 0" in same.output and "only in B: 1" in same.output
    data = runner.invoke(main, ["compare", str(runs["base"]), str(runs["slow"]), "--json",
                                "--metric", "param_error"])
    assert data.exit_code == 0 and '"verdict": "unchanged"' in data.output


def _folder(path, rows):
    path.mkdir(parents=True)
    rows_to_frame(rows).to_parquet(path / "results.parquet", index=False)
    (path / "manifest.json").write_text(
        '{"metrics": {"e": ["param_error", "test_accuracy"]}, '
        '"metric_directions": {"param_error": "min", "test_accuracy": "max"}}')
    return path


def _final(alg, rep, param_error, accuracy, status="max_iter"):
    return {"experiment": "e", "dataset": "d", "algorithm": alg, "repetition": rep,
            "dataset_params": "{}", "algorithm_params": "{}", "record": "final",
            "iteration": 10, "time": 1.0, "status": status, "param_error": param_error,
            "test_accuracy": accuracy}


def test_metric_regressions_need_the_factor_and_significance(tmp_path):
    seeds = range(8)
    a = _folder(tmp_path / "a", [_final("x", r, 0.1 + 0.01 * r, 0.9) for r in seeds]
                + [_final("gone", r, 0.1, 0.9) for r in seeds])
    b = _folder(tmp_path / "b", [_final("x", r, 0.2 + 0.01 * r, 0.9 - 0.001 * (r % 2))
                                 for r in seeds]
                + [_final("new", r, 0.1, 0.9) for r in seeds])
    changes = {(c.algorithm, c.measure): c for c in compare_runs(a, b, factor=1.1)}
    worse = changes[("x", "param_error")]
    assert worse.verdict == "worse" and worse.p_value < 0.01 and worse.ratio > 1.5
    # accuracy moved by < 0.1 %: within the factor, not a change
    assert changes[("x", "test_accuracy")].verdict == "unchanged"
    assert changes[("gone", "cells")].verdict == "only in A"
    assert changes[("new", "cells")].verdict == "only in B"
    # a cell that now errors is a regression too
    c = _folder(tmp_path / "c", [_final("x", r, 0.1 + 0.01 * r, 0.9, "error" if r == 0 else
                                        "max_iter") for r in seeds])
    failed = [ch for ch in regressions(compare_runs(a, c)) if ch.measure == "successful cells"]
    assert failed and failed[0].a == 8 and failed[0].b == 7
