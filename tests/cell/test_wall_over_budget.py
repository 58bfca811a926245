"""A cell whose wall time is far beyond its time budget is flagged, says why, and its score is
marked on the leaderboards (issue 21, item 8).

The budget's timeout counts CPU time by default: an algorithm that sleeps between reports, or
goes on after the runner told it to stop, is never stopped by it. Its status stays what it was
(``max_iter``, ``timeout``, ...), but the final row records ``wall_over_budget``, the message
says how far over and where the time went, and the score carries a mark with its legend.
"""

from __future__ import annotations

import html
import re
import textwrap

import pytest
from conftest import fake_distribution

from moebench import plugins
from moebench.cell import expand_cells, killed_rows, prepare_unit, run_cell
from moebench.cell.rows import wall_over_budget
from moebench.reports.leaderboard import (
    OVER_BUDGET_MARK,
    format_rows,
    leaderboard,
    mark_legend,
)
from moebench.reports.results import read_results
from moebench.reports.summary import summary_lines
from moebench.runner import run_suite
from moebench.suite import parse_suite, resolve

SLOW_PLUGINS = """
    import time

    from moebench import Algorithm, Params, hookimpl
    from moebench.algorithm import Iterate


    class Sleepy(Algorithm):
        \"\"\"Sleeps between its reports: wall time, hardly any CPU time.\"\"\"
        name = "sleepy"

        class Params(Params):
            nap: float = 0.2

        def fit(self, problem, init, callback):
            t = 0
            while callback(Iterate(t, init)):
                time.sleep(self.params.nap)
                t += 1
            return init


    class Deaf(Algorithm):
        \"\"\"Ignores the stop: sleeps on after the callback returned False, then reports again
        (``report``) or returns.\"\"\"
        name = "deaf"

        class Params(Params):
            after: float = 1.5
            report: bool = False

        def fit(self, problem, init, callback):
            t = 0
            while callback(Iterate(t, init)):
                t += 1
            time.sleep(self.params.after)
            if self.params.report:
                callback(Iterate(t + 1, init))
            return init


    @hookimpl
    def register_algorithms(register):
        register(Sleepy)
        register(Deaf)
"""

SUITE = """
name: over-budget
seed: 3
repetitions: 1
budget: {max_iter: MAX_ITER, timeout: 0.2}
metrics: [param_error, test_mse]
leaderboard: {rank_by: test_mse}
datasets:
  - name: synthetic-moe
    params: {n: 200, n_test: 100, d: 3, k: 2, sigma: 0.3}
algorithms:
ALGORITHMS"""


def _suite_text(algorithms: str, max_iter: int = 8) -> str:
    return textwrap.dedent(SUITE).replace("MAX_ITER", str(max_iter)).replace(
        "ALGORITHMS", textwrap.indent(textwrap.dedent(algorithms), "  "))


@pytest.fixture
def slow_plugins(fresh_plugins, tmp_path, monkeypatch):
    """The ``sleepy`` and ``deaf`` test algorithms, discoverable here and in workers."""
    site = fake_distribution(tmp_path / "site", "mb-slow-test", {"mb_slow_algos": SLOW_PLUGINS},
                             {"slow-algos": "mb_slow_algos"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()


def _final_rows(algorithms: str, max_iter: int = 8) -> dict[str, dict]:
    """Each algorithm's final row, computed in this process (one shared unit)."""
    suite = parse_suite(_suite_text(algorithms, max_iter))
    cells = list(expand_cells(suite.name, suite.seed, resolve(suite, "<test>"), suite.device,
                              suite.dtype))
    unit = prepare_unit(cells[0])
    return {spec.algorithm.name: run_cell(spec, unit)[-1] for spec in cells}


BUDGET_SENTENCE = re.compile(r"wall time (\d+(\.\d+)?) s is (\d+(\.\d)?)x the 0\.2 s budget, "
                             r"which counts CPU time \(")


def test_the_threshold_is_a_factor_and_a_grace_of_the_timeout():
    assert wall_over_budget(121.0, 40.0) and not wall_over_budget(119.0, 40.0)  # 3 x timeout
    assert wall_over_budget(1.3, 0.2) and not wall_over_budget(1.1, 0.2)  # 1 s past it
    assert not wall_over_budget(10**6, None)  # no timeout, no budget to exceed


def test_a_sleeping_cell_is_flagged_with_where_its_time_went(slow_plugins):
    rows = _final_rows("- name: sleepy\n- name: gd\n")
    sleepy, gd = rows["sleepy"], rows["gd"]
    # the CPU clock stays honest: the sleeper used almost no CPU and ran its iterations
    assert sleepy["clock"] == "cpu" and sleepy["cpu_time"] < 0.2
    assert sleepy["status"] == "max_iter" and sleepy["time"] > 1.5
    assert sleepy["wall_over_budget"] is True
    message = sleepy["message"]
    found = BUDGET_SENTENCE.search(message)
    assert found, message
    assert float(found[3]) == pytest.approx(sleepy["time"] / 0.2, rel=0.1)
    assert "that the CPU clock does not count (sleep, I/O, another process" in message
    assert "hard wall-clock limit (budget.wall_timeout, or moebench run --timeout)" in message
    # a cell that kept to its budget is not flagged and gets no sentence
    assert gd["wall_over_budget"] is False and gd["message"] is None
    assert gd["time_after_stop"] < 0.5


@pytest.mark.parametrize("report", [False, True])
def test_an_algorithm_that_ignores_the_stop_is_flagged(slow_plugins, report):
    deaf = _final_rows(f"- name: deaf\n  params: {{report: {str(report).lower()}}}\n",
                       max_iter=2)["deaf"]
    # stopped at max_iter after a moment; the 1.5 s it slept on are counted after the stop
    assert deaf["status"] == "max_iter" and deaf["time"] < 1.0
    assert deaf["time_after_stop"] >= 1.5
    assert deaf["wall_over_budget"] is True
    assert re.search(r"it ran 1\.\d+ s after the runner told it to stop \(it ignored the "
                     r"stop\)", deaf["message"]), deaf["message"]
    assert "budget.wall_timeout" in deaf["message"]
    if report:  # the report after the stop ended fit, as before; both notes are kept
        assert "reported another iteration after the runner said stop" in deaf["message"]


def test_a_cell_killed_at_a_hard_limit_far_past_its_budget_is_flagged(fresh_plugins):
    suite = parse_suite(_suite_text("- name: gd\n"))
    spec = next(iter(expand_cells(suite.name, suite.seed, resolve(suite, "<test>"),
                                  suite.device, suite.dtype)))
    assert killed_rows(spec, 120.6)[-1]["wall_over_budget"] is True
    assert killed_rows(spec, 0.3)[-1]["wall_over_budget"] is False


def test_the_leaderboards_and_the_summary_mark_the_flagged_score(slow_plugins, tmp_path):
    directory = run_suite(parse_suite(_suite_text("- name: sleepy\n- name: gd\n")), tmp_path)
    frame = read_results(directory)
    finals = frame[frame["record"] == "final"].set_index("algorithm")
    assert finals.loc["sleepy", "wall_over_budget"] == 1
    assert finals.loc["gd", "wall_over_budget"] == 0
    assert set(finals["status"]) == {"max_iter"}  # the statuses keep their meaning

    board = leaderboard(frame, "test_mse", {"test_mse": "min"})
    scores = {row[1]: row[2] for row in format_rows(board)}
    assert scores["sleepy"].endswith(f" {OVER_BUDGET_MARK}"), scores
    assert OVER_BUDGET_MARK not in scores["gd"]
    legend = [line for line in mark_legend(board) if line.startswith(OVER_BUDGET_MARK)]
    assert len(legend) == 1
    assert "ran far beyond their time budget in wall time" in legend[0]
    assert "slept, waited for I/O or another process, or ignored the stop" in legend[0]

    markdown = (directory / "leaderboard.md").read_text()
    assert f"| sleepy | {scores['sleepy']} |" in markdown and legend[0] in markdown
    page = html.unescape((directory / "report.html").read_text())
    assert legend[0].replace("`", "") in page
    line = summary_lines(directory)[0]
    assert line.endswith(f"1 cell ran far beyond the time budget in wall time "
                         f"{OVER_BUDGET_MARK} (see the messages)"), line
