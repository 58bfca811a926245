"""The runner: reproducible results, statuses for every kind of failure, nothing lost."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd

import moebench.reports.leaderboard as boards
import moebench.runner as runner
from moebench.reports.results import read_manifest, read_results
from moebench.runner import run_suite
from moebench.suite import parse_suite, resolve

BASE = """
name: runner-test
seed: 11
repetitions: 2
budget: {max_iter: 6, timeout: 60}
metrics: [param_error, train_nll, test_nll, test_mse]
leaderboard: {rank_by: test_mse}
datasets:
  - name: synthetic-moe
    params: {n: 300, n_test: 200, d: 3, k: 2, sigma: 0.3}
algorithms:
"""


def suite(algorithms: str, base: str = BASE):
    return parse_suite(textwrap.dedent(base) + textwrap.indent(textwrap.dedent(algorithms), "  "))


def finals(directory) -> pd.DataFrame:
    frame = read_results(directory)
    return frame[frame["record"] == "final"].set_index(["algorithm", "repetition"])


def test_results_are_tidy_and_complete(fresh_plugins, tmp_path):
    directory = run_suite(suite("- name: joint-em\n- name: gd\n"), tmp_path)
    assert directory == tmp_path / "runner-test"
    for name in ("results.parquet", "leaderboard.csv", "leaderboard.md", "manifest.json",
                 "cells.jsonl"):
        assert (directory / name).is_file(), name
    frame = read_results(directory)
    iters = frame[frame["record"] == "iteration"]
    # one row per iteration 0..max_iter for each of 2 algorithms x 2 repetitions
    assert len(iters) == 2 * 2 * 7
    assert set(iters["iteration"]) == set(range(7))
    assert (iters.groupby(["algorithm", "repetition"])["time"].apply(
        lambda t: t.is_monotonic_increasing)).all()
    fin = finals(directory)
    assert len(fin) == 4 and set(fin["status"]) == {"max_iter"}
    for col in ("param_error", "train_nll", "test_nll", "test_mse", "seed", "dataset_params",
                "algorithm_params", "model", "data_seed"):
        assert col in fin.columns
    assert np.isfinite(fin["test_mse"]).all()
    # both algorithms of a repetition saw the same data and the same initialisation
    rep0 = iters[(iters["repetition"] == 0) & (iters["iteration"] == 0)]
    assert rep0["data_seed"].nunique() == 1
    assert rep0["param_error"].nunique() == 1
    manifest = read_manifest(directory)
    for key in ("moebench", "numpy", "torch", "plugins", "device", "command", "started",
                "finished", "git_commit"):
        assert key in manifest, key
    assert manifest["plugins"]["joint-em"]["version"] == manifest["moebench"]
    assert manifest["status_counts"] == {"max_iter": 4}
    board = pd.read_csv(directory / "leaderboard.csv")
    assert list(board["rank"]) == [1, 2]
    assert board["mean"].is_monotonic_increasing


def test_same_seed_gives_identical_metrics(fresh_plugins, tmp_path):
    text = "- name: joint-em\n- name: gd\n"
    a = finals(run_suite(suite(text), tmp_path / "a"))
    b = finals(run_suite(suite(text), tmp_path / "b"))
    cols = ["param_error", "train_nll", "test_nll", "test_mse"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    c = finals(run_suite(suite(text, BASE.replace("seed: 11", "seed: 12")), tmp_path / "c"))
    assert not np.allclose(a["test_mse"], c["test_mse"])


def test_failures_are_recorded_not_fatal(test_plugins, tmp_path):
    directory = run_suite(suite("- name: explode\n- name: blowup\n- name: joint-em\n"), tmp_path)
    fin = finals(directory)
    assert set(fin.loc["explode", "status"]) == {"error"}
    for message in fin.loc["explode", "message"]:  # the error, then its traceback
        assert message.split("\n")[:2] == ["RuntimeError: boom: the plugin failed",
                                           "Traceback (most recent call last):"], message
        assert message.endswith("\nRuntimeError: boom: the plugin failed\n"), message
    assert set(fin.loc["blowup", "status"]) == {"diverged"}
    assert set(fin.loc["blowup", "message"]) == {
        "non-finite param_error, train_nll, test_nll, test_mse at iteration 1"}
    assert set(fin.loc["joint-em", "status"]) == {"max_iter"}


def test_missing_data_skips_with_reason(test_plugins, tmp_path):
    text = BASE.replace("datasets:\n", "datasets:\n  - name: missing-data\n")
    directory = run_suite(suite("- name: joint-em\n", text), tmp_path)
    fin = read_results(directory).query("record == 'final'")
    skipped = fin[fin["dataset"] == "missing-data"]
    assert set(skipped["status"]) == {"skipped"}
    assert set(skipped["message"]) == {"missing-data: files not found; put them in /nowhere"}
    assert set(fin[fin["dataset"] != "missing-data"]["status"]) == {"max_iter"}


def test_timeout_status(fresh_plugins, tmp_path):
    text = BASE.replace("timeout: 60", "timeout: 1.0e-9")
    fin = finals(run_suite(suite("- name: gd\n", text), tmp_path))
    assert set(fin["status"]) == {"timeout"}
    assert set(fin["iteration"]) == {0}


def test_keyboard_interrupt_inside_a_plugin_fails_only_its_cell(test_plugins, tmp_path):
    text = "- name: joint-em\n- name: explode\n  params: {interrupt: true}\n"
    directory = run_suite(suite(text), tmp_path)
    fin = finals(directory)
    assert set(fin.loc["explode", "status"]) == {"error"}
    for message in fin.loc["explode", "message"]:  # no message: nothing after the colon
        assert message.split("\n")[:2] == ["KeyboardInterrupt: ",
                                           "Traceback (most recent call last):"], message
        assert message.endswith("\nKeyboardInterrupt\n"), message
    assert set(fin.loc["joint-em", "status"]) == {"max_iter"}
    assert read_manifest(directory)["interrupted"] is False
    lines = (directory / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])[-1]["status"] == "max_iter"


def test_parallel_jobs_match_serial(fresh_plugins, tmp_path):
    text = "- name: joint-em\n"
    serial = finals(run_suite(suite(text), tmp_path / "s"))
    parallel = finals(run_suite(suite(text), tmp_path / "p", jobs=2))
    np.testing.assert_allclose(parallel.sort_index()["test_mse"],
                               serial.sort_index()["test_mse"], rtol=1e-9)


def test_mismatched_model_has_no_truth(fresh_plugins, tmp_path):
    text = BASE.replace("params: {n: 300, n_test: 200, d: 3, k: 2, sigma: 0.3}",
                        "params: {n: 300, n_test: 200, d: 3, k: 2, sigma: 0.3}\n"
                        "    model: {params: {k: 3}}")
    fin = finals(run_suite(suite("- name: joint-em\n", text), tmp_path))
    assert set(fin["status"]) == {"max_iter"}
    assert fin["param_error"].isna().all() and np.isfinite(fin["test_mse"]).all()


def test_blow_up_is_divergence(fresh_plugins, tmp_path):
    fin = finals(run_suite(suite("- name: gd\n  params: {lr: 50.0}\n"), tmp_path))
    assert set(fin["status"]) == {"diverged"}
    assert fin["message"].str.fullmatch(
        r"objective blew up: \S+ at iteration 2, from \S+ at iteration 0").all(), fin["message"]


def test_a_run_resolves_once_writes_the_table_once_and_ranks_once(fresh_plugins, tmp_path,
                                                                  monkeypatch):
    """The end of a run works from one table in memory: results.parquet is written once and
    never read back, the leaderboard is computed once for all the outputs, and the suite the
    caller resolved is not resolved again."""
    parsed = suite("- name: joint-em\n- name: gd\n")
    experiments = resolve(parsed, "<test>")
    calls = {"resolve": 0, "read_parquet": 0, "to_parquet": 0, "leaderboard": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(runner, "resolve", counted("resolve", runner.resolve))
    monkeypatch.setattr(pd, "read_parquet", counted("read_parquet", pd.read_parquet))
    monkeypatch.setattr(pd.DataFrame, "to_parquet",
                        counted("to_parquet", pd.DataFrame.to_parquet))
    monkeypatch.setattr(boards, "leaderboard", counted("leaderboard", boards.leaderboard))
    directory = run_suite(parsed, tmp_path, experiments=experiments)
    assert calls == {"resolve": 0, "read_parquet": 0, "to_parquet": 1, "leaderboard": 1}
    for name in ("results.parquet", "leaderboard.md", "failures.md", "report.html"):
        assert (directory / name).is_file(), name
    run_suite(parsed, tmp_path / "again")  # without experiments: the runner resolves it
    assert calls["resolve"] == 1
