"""Where a cell runs (moebench.cell): one cell computed in this process, without workers, the
store or the runner, gives the rows a suite run records; the callback contract is enforced."""

from __future__ import annotations

import textwrap

import pandas as pd
from conftest import fake_distribution

from moebench import plugins
from moebench.cell import (
    CellSpec,
    PreparedUnit,
    UnitFailure,
    expand_cells,
    prepare_unit,
    run_cell,
)
from moebench.cell.rows import rows_to_frame
from moebench.reports.results import read_results
from moebench.runner import run_suite
from moebench.suite import parse_suite, resolve

SUITE = """
name: cell-test
seed: 5
repetitions: 1
budget: {max_iter: 4, timeout: 60}
metrics: [param_error, train_nll, test_mse]
leaderboard: {rank_by: test_mse}
datasets:
  - name: synthetic-moe
    params: {n: 300, n_test: 100, d: 3, k: 2, sigma: 0.3}
algorithms:
  - name: joint-em
  - name: gd
"""
METRICS = ["param_error", "train_nll", "test_mse", "objective"]


def _cells(text: str = SUITE) -> list[CellSpec]:
    suite = parse_suite(textwrap.dedent(text))
    experiments = resolve(suite, "<test>")
    return list(expand_cells(suite.name, suite.seed, experiments, suite.device, suite.dtype))


def test_a_cell_computed_in_process_equals_the_suite_run(fresh_plugins, tmp_path):
    cells = _cells()
    unit = prepare_unit(cells[0])
    assert isinstance(unit, PreparedUnit)
    rows = [row for spec in cells for row in run_cell(spec, unit)]
    here = rows_to_frame(rows)
    there = read_results(run_suite(parse_suite(textwrap.dedent(SUITE)), tmp_path))
    key = ["algorithm", "record", "iteration"]
    here = here.sort_values(key).reset_index(drop=True)
    there = there.sort_values(key).reset_index(drop=True)
    assert list(here["status"]) == list(there["status"])
    assert (here.loc[here["record"] == "final", "status"] == "max_iter").all()
    pd.testing.assert_frame_equal(here[key + METRICS], there[key + METRICS],
                                  check_exact=True, check_dtype=False)


SKIPPER = """
    from moebench import Algorithm, hookimpl
    from moebench.algorithm import Iterate


    class Skipper(Algorithm):
        \"\"\"Reports iteration 1 first: a broken callback contract.\"\"\"
        name = "skip-first-iteration"

        def fit(self, problem, init, callback):
            callback(Iterate(1, init))
            return init


    @hookimpl
    def register_algorithms(register):
        register(Skipper)
"""


def test_a_cell_that_miscounts_its_iterations_is_an_error_naming_the_contract(
        fresh_plugins, tmp_path, monkeypatch):
    site = fake_distribution(tmp_path / "site", "mb-cell-test", {"mb_cell_skipper": SKIPPER},
                             {"cell-skipper": "mb_cell_skipper"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    spec = _cells(SUITE.replace("  - name: joint-em\n  - name: gd\n",
                                "  - name: skip-first-iteration\n"))[0]
    rows = run_cell(spec, prepare_unit(spec))
    assert len(rows) == 1 and rows[0]["record"] == "final"
    assert rows[0]["status"] == "error"
    assert rows[0]["message"] == ("Iterate.iteration must count 0, 1, 2, ... (one per report; "
                                  "restarts keep counting): expected 0, the algorithm "
                                  "reported 1")


def test_a_plugin_that_raises_fails_its_cell_only_with_the_error(test_plugins):
    spec = _cells(SUITE.replace("  - name: joint-em\n  - name: gd\n",
                                "  - name: explode\n    params: {at: 2}\n"))[0]
    rows = run_cell(spec, prepare_unit(spec))
    assert [r["record"] for r in rows] == ["iteration", "iteration", "final"]
    assert {r["status"] for r in rows} == {"error"}
    assert rows[-1]["message"].startswith("RuntimeError: boom: the plugin failed\n")
    assert rows[-1]["iteration"] == 1  # the last reported iteration


def test_a_unit_without_its_data_is_skipped_with_the_reason(test_plugins):
    text = SUITE.replace("  - name: synthetic-moe\n    params: {n: 300, n_test: 100, d: 3, "
                         "k: 2, sigma: 0.3}\n", "  - name: missing-data\n")
    text = text.replace("metrics: [param_error, train_nll, test_mse]", "metrics: [train_nll]")
    text = text.replace("rank_by: test_mse", "rank_by: train_nll")
    unit = prepare_unit(_cells(text)[0])
    assert isinstance(unit, UnitFailure)
    assert (unit.status, unit.cause) == ("skipped", "data-unavailable")
    assert unit.message == "missing-data: files not found; put them in /nowhere"
