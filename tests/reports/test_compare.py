"""moebench compare: seeds are the unit, asv's marks, one line per measure in a pipe.

These tests compare results folders with known per-iteration times, so that every verdict is
decided by the statistics and not by the machine's load; the planted slowdown run for real, on
a loaded machine, is tests/history/test_compare_commits.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from rich.console import Console

from moebench import cli
from moebench.cell.rows import rows_to_frame
from moebench.cli import main
from moebench.reports.compare import compare_runs, regressions, seeds_needed, smallest_p

MANIFEST = ('{"git_commit": "%s", "metrics": {"e": ["param_error"]}, '
            '"metric_directions": {"param_error": "min"}}')


def _timed(path, steps, seeds=6, errors=None, commit="a" * 40):
    """A results folder whose cells take ``steps[alg]`` CPU seconds per iteration (wall:
    ten times more), with 8 recorded iterations each and a jitter that differs by seed."""
    rows = []
    for alg, step in steps.items():
        for rep in range(seeds):
            jitter = 1 + 0.02 * ((rep * 7) % 5)
            cell = {"experiment": "e", "dataset": "d", "algorithm": alg, "repetition": rep,
                    "dataset_params": "{}", "algorithm_params": "{}", "key": f"{alg}-{rep}"}
            for it in range(9):
                rows.append({**cell, "record": "iteration", "iteration": it,
                             "cpu_time": it * step * jitter, "time": 10 * it * step * jitter})
            value = (errors or {}).get(alg, 0.1) + 0.001 * rep
            rows.append({**cell, "record": "final", "iteration": 8, "status": "max_iter",
                         "cpu_time": 8 * step * jitter, "time": 80 * step * jitter,
                         "param_error": value})
    path.mkdir(parents=True)
    rows_to_frame(rows).to_parquet(path / "results.parquet", index=False)
    (path / "manifest.json").write_text(MANIFEST % commit)
    return path


@pytest.fixture
def timed(tmp_path):
    return {
        "base": _timed(tmp_path / "base", {"em": 1e-3, "gd": 2e-4}),
        "same": _timed(tmp_path / "same", {"em": 1e-3, "gd": 2e-4}, commit="b" * 40),
        "slow": _timed(tmp_path / "slow", {"em": 2e-3, "gd": 2e-4}, commit="c" * 40),
    }


def test_twice_the_time_per_iteration_on_every_seed_is_a_regression(timed):
    result = compare_runs(timed["base"], timed["slow"])
    (slow,) = result.regressions
    assert (slow.algorithm, slow.measure, slow.mark, slow.seeds) == ("em", "time", "+", 6)
    assert slow.ratio == pytest.approx(2.0) and slow.a == pytest.approx(1.03e-3)
    assert slow.p_value == pytest.approx(smallest_p(6)) == pytest.approx(1 / 32)
    assert slow.unit == "s" and result.clock == "cpu" and result.underpowered is None
    others = [c for c in result.changes if c is not slow]
    assert others and all(c.verdict == "unchanged" for c in others)
    assert compare_runs(timed["base"], timed["same"]).regressions == []


def test_the_clock_decides_which_times_are_compared(timed, tmp_path):
    assert compare_runs(timed["base"], timed["slow"], clock="wall").regressions[0].a == \
        pytest.approx(10.3e-3)
    # a run without CPU times is compared on the wall clock, and the result says so
    frame = pd.read_parquet(timed["slow"] / "results.parquet")
    (tmp_path / "old").mkdir()
    frame.drop(columns="cpu_time").to_parquet(tmp_path / "old" / "results.parquet")
    (tmp_path / "old" / "manifest.json").write_text(MANIFEST % ("d" * 40))
    result = compare_runs(timed["base"], tmp_path / "old")
    assert result.clock == "wall" and "wall clock" in result.notes[0]


def test_beyond_the_factor_but_not_significant_is_marked_tilde(tmp_path):
    base = _timed(tmp_path / "a", {"em": 1e-3}, seeds=3)
    slow = _timed(tmp_path / "b", {"em": 2e-3}, seeds=3)
    result = compare_runs(base, slow)
    (em,) = [c for c in result.changes if c.measure == "time"]
    assert (em.verdict, em.mark, em.seeds) == ("unsure", "~", 3) and em.ratio == 2.0
    assert em.p_value == pytest.approx(smallest_p(3)) == 0.25
    assert result.regressions == []
    assert result.underpowered.startswith(
        "2 measure(s) have only 3 seed(s) with a value in both runs: the exact test cannot "
        "reach p < 0.05 (smallest p: 0.25), so they can be ~ but never + or -")
    assert result.underpowered.endswith("(--seeds 6)")
    assert [seeds_needed(a) for a in (0.05, 0.01, 0.5)] == [6, 8, 3]
    # within the factor: unchanged, whatever the p-value
    near = _timed(tmp_path / "c", {"em": 1.05e-3})
    assert compare_runs(_timed(tmp_path / "d", {"em": 1e-3}), near).changes[0].verdict == \
        "unchanged"


def test_time_factor_applies_to_times_only(timed, tmp_path):
    worse = _timed(tmp_path / "w", {"em": 2e-3, "gd": 2e-4}, errors={"gd": 0.2})
    result = compare_runs(timed["base"], worse, time_factor=2.5)
    marks = {(c.algorithm, c.measure): c.mark for c in result.changes}
    assert marks[("em", "time")] == " " and marks[("gd", "param_error")] == "+"


def test_in_a_pipe_one_line_per_changed_measure_and_the_summary_on_stdout(timed):
    runner = CliRunner()
    done = runner.invoke(main, ["compare", str(timed["base"]), str(timed["slow"]),
                                "--fail-on-regression"])
    assert done.exit_code == 1
    lines = done.stdout.splitlines()
    (plus,) = [x for x in lines if x.startswith("+")]
    assert plus.split()[1:6] == ["1.03ms", "2.06ms", "2", "0.031", "6"]
    assert plus.split()[6:] == ["time", "e", "/", "d", "/", "em"]
    assert "A: " in lines[0] and "(git aaaaaaaa)" in lines[0]
    assert "worse: 1, better: 0, ~: 0, unchanged: 3, only in A: 0, only in B: 0" in lines
    assert any(x.startswith("regression: e / d / em: time 1.03ms -> 2.06ms 2x") for x in lines)
    assert "(3 unchanged measure(s) not shown; --all lists them)" in lines
    assert not any(c in done.stdout for c in "│┃━")
    same = runner.invoke(main, ["compare", str(timed["base"]), str(timed["same"]),
                                "--fail-on-regression"])
    assert same.exit_code == 0 and "worse: 0, better: 0" in same.stdout
    everything = runner.invoke(main, ["compare", str(timed["base"]), str(timed["same"]),
                                      "--all", "--metric", "param_error"])
    assert len([x for x in everything.stdout.splitlines() if "param_error" in x]) == 2


def test_json_goes_to_stdout_with_the_summary(timed):
    done = CliRunner().invoke(main, ["compare", str(timed["base"]), str(timed["slow"]),
                                     "--json", "--fail-on-regression"])
    assert done.exit_code == 1
    data = json.loads(done.stdout)
    assert data["counts"]["worse"] == 1 and data["regressions"] == 1
    assert data["clock"] == "cpu" and data["alpha"] == 0.05
    (em,) = [c for c in data["changes"] if c["mark"] == "+"]
    assert em["unit"] == "s" and em["seeds"] == 6 and em["measure"] == "time"


def test_on_a_terminal_a_table_of_every_measure(timed, monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True, width=160))
    done = CliRunner().invoke(main, ["compare", str(timed["base"]), str(timed["slow"])])
    assert done.exit_code == 0, done.output
    text = screen.getvalue()
    assert "B / A" in text and "2.06ms" in text and "gd" in text  # unchanged rows too


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
    changes = {(c.algorithm, c.measure): c for c in compare_runs(a, b, factor=1.1).changes}
    worse = changes[("x", "param_error")]
    assert worse.verdict == "worse" and worse.p_value < 0.01 and worse.ratio > 1.5
    # accuracy moved by < 0.1 %: within the factor, not a change
    assert changes[("x", "test_accuracy")].verdict == "unchanged"
    assert changes[("gone", "cells")].verdict == "only in A"
    assert changes[("new", "cells")].verdict == "only in B"
    # a cell that now errors is a regression too
    c = _folder(tmp_path / "c", [_final("x", r, 0.1 + 0.01 * r, 0.9, "error" if r == 0 else
                                        "max_iter") for r in seeds])
    failed = [ch for ch in regressions(compare_runs(a, c).changes)
              if ch.measure == "successful cells"]
    assert failed and failed[0].a == 8 and failed[0].b == 7


def test_fewer_seeds_in_one_run_are_not_failed_cells(timed, tmp_path):
    three = _timed(tmp_path / "three", {"em": 1e-3, "gd": 2e-4}, seeds=3)
    result = compare_runs(timed["base"], three)
    assert [c for c in result.changes if c.measure == "successful cells"] == []
    assert result.regressions == [] and {c.seeds for c in result.changes} == {3}


def test_a_cell_that_fails_is_a_regression_with_its_statuses(timed, tmp_path):
    frame = pd.read_parquet(timed["same"] / "results.parquet")
    frame.loc[(frame["record"] == "final") & (frame["key"] == "gd-2"), "status"] = "error"
    folder = tmp_path / "failed"
    folder.mkdir()
    frame.to_parquet(folder / "results.parquet")
    (folder / "manifest.json").write_text(MANIFEST % ("e" * 40))
    done = CliRunner().invoke(main, ["compare", str(timed["base"]), str(folder),
                                     "--fail-on-regression"])
    assert done.exit_code == 1, done.output
    assert "regression: e / d / gd: successful cells 6 -> 5 (B: max_iter: 5, error: 1)" in \
        done.stdout


def test_a_metric_that_became_nan_is_worse(timed, tmp_path):
    frame = pd.read_parquet(timed["same"] / "results.parquet")
    frame.loc[(frame["record"] == "final") & (frame["algorithm"] == "em") &
              (frame["repetition"] < 2), "param_error"] = np.nan
    folder = tmp_path / "nan"
    folder.mkdir()
    frame.to_parquet(folder / "results.parquet")
    (folder / "manifest.json").write_text(MANIFEST % ("f" * 40))
    (nan,) = compare_runs(timed["base"], folder).regressions
    assert (nan.algorithm, nan.measure, nan.mark) == ("em", "param_error", "+")
    assert "no finite value in B for 2 seed(s)" in nan.note
    assert compare_runs(folder, timed["base"]).changes[0].verdict == "better"


def test_an_unknown_measure_is_an_error_not_an_empty_comparison(timed):
    done = CliRunner().invoke(main, ["compare", str(timed["base"]), str(timed["same"]),
                                     "--metric", "param_eror", "--fail-on-regression"])
    assert done.exit_code == 2
    assert "no measure 'param_eror' in these runs: choose from param_error, time" in \
        " ".join(done.output.split())
