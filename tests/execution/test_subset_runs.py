"""Subset runs into a folder that holds more: its outputs describe every finished cell it holds.

A full run, then ``--resume`` with one experiment and one algorithm selected: results.parquet,
the leaderboards, REPRODUCTION.md, failures.md and report.html still cover the cells of the
first run that the subset did not select; the manifest carries what the reports need about
every experiment in the folder and lists the runs that wrote into it.
"""

from __future__ import annotations

import json
import textwrap

import pandas as pd
from click.testing import CliRunner

from moebench.cli import main
from moebench.execution.store import ResultStore
from moebench.reports.results import read_manifest, read_results
from moebench.runner import run_suite
from moebench.suite import parse_suite, resolve, select

SUITE = """
name: subset-test
seed: 5
repetitions: 2
device: cpu
budget: {max_iter: 3, timeout: 60}
experiments:
  - name: first
    metrics: [param_error, test_mse]
    leaderboard: {rank_by: test_mse}
    datasets:
      - name: synthetic-moe
        params: {n: 200, n_test: 100, d: 3, k: 2, sigma: 0.3}
    algorithms:
      - name: joint-em
      - name: gd
  - name: second
    metrics: [param_error, train_nll]
    leaderboard: {rank_by: train_nll}
    figures:
      - {metric: train_nll, title: "second's curve"}
    datasets:
      - name: synthetic-moe
        params: {n: 150, n_test: 100, d: 4, k: 2, sigma: 0.3}
    algorithms:
      - name: joint-em
      - name: gd
"""


def finals(directory) -> pd.DataFrame:
    frame = read_results(directory)
    return frame[frame["record"] == "final"]


def cells_of(frame: pd.DataFrame) -> set[tuple[str, str, int]]:
    return {(r.experiment, r.algorithm, int(r.repetition)) for r in frame.itertuples()}


def test_a_subset_run_keeps_every_earlier_cell_in_the_outputs(fresh_plugins, tmp_path):
    suite = parse_suite(textwrap.dedent(SUITE))
    directory = run_suite(suite, tmp_path)
    full = cells_of(finals(directory))
    assert len(full) == 8
    assert (directory / "REPRODUCTION.md").is_file()  # "second" has a figure
    # the subset: experiment "first", algorithm gd, one seed more; "second" not selected
    chosen = select(suite, ["first"], ["gd"], [], None, "<suite>")
    experiments = resolve(chosen, "<suite>", seeds=3)
    run_suite(chosen, tmp_path, mode="resume", experiments=experiments)

    fin = finals(directory)
    assert cells_of(fin) == full | {("first", "gd", 2)}  # every cell of both runs, once each
    assert not fin.duplicated(["experiment", "dataset", "algorithm", "repetition"]).any()
    board = pd.read_csv(directory / "leaderboard.csv")
    assert set(zip(board["experiment"], board["algorithm"], strict=True)) == {
        (e, a) for e in ("first", "second") for a in ("joint-em", "gd")}
    markdown = (directory / "leaderboard.md").read_text()
    assert "second" in markdown and "joint-em" in markdown
    html = (directory / "report.html").read_text()
    assert 'id="exp-second"' in html or "exp-second" in html
    assert "joint-em" in html
    # REPRODUCTION.md: the earlier experiment's figure, although no selected one has figures
    reproduction = (directory / "REPRODUCTION.md").read_text()
    assert "## second" in reproduction and "## first" in reproduction
    assert "2 runs wrote into this folder" in reproduction

    manifest = read_manifest(directory)
    assert manifest["rank_by"] == {"first": "test_mse", "second": "train_nll"}
    assert manifest["metrics"] == {"first": ["param_error", "test_mse"],
                                   "second": ["param_error", "train_nll"]}
    assert {"param_error", "test_mse", "train_nll"} <= set(manifest["metric_directions"])
    described = {e["name"]: e for e in manifest["experiments"]}
    assert list(described) == ["first", "second"]
    assert set(described["first"]["algorithms"]) == {"joint-em", "gd"}  # merged
    assert described["first"]["repetitions"] == 3  # this run's description wins
    assert described["second"]["figures"][0]["metric"] == "train_nll"
    # counts: this run's selection, and the folder
    assert manifest["cells"] == 3 and manifest["reused_cells"] == 2
    assert manifest["status_counts"] == {"max_iter": 3}
    assert manifest["cells_in_folder"] == 9 and manifest["earlier_cells"] == 6
    assert manifest["folder_status_counts"] == {"max_iter": 9}
    runs = manifest["runs"]
    assert [r["experiments"] for r in runs] == [["first", "second"], ["first"]]
    assert [r["cells"] for r in runs] == [8, 3]
    assert [r["computed"] for r in runs] == [8, 1]
    assert all(r["state"] == "complete" for r in runs)
    # nothing was lost from cells.jsonl: 8 + 1 lines
    assert len((directory / "cells.jsonl").read_text().splitlines()) == 9


def test_a_changed_configuration_replaces_the_earlier_cell(fresh_plugins, tmp_path):
    """A cell recomputed under another configuration (new key, same coordinates) replaces the
    earlier one in the outputs; the earlier cells this run did not select stay."""
    suite = parse_suite(textwrap.dedent(SUITE))
    directory = run_suite(suite, tmp_path)
    changed = parse_suite(textwrap.dedent(SUITE).replace("max_iter: 3", "max_iter: 2"))
    chosen = select(changed, ["second"], ["gd"], [], None, "<suite>")
    run_suite(chosen, tmp_path, mode="resume")
    fin = finals(directory).set_index(["experiment", "algorithm", "repetition"]).sort_index()
    assert len(fin) == 8 and not fin.index.duplicated().any()
    assert (fin.loc[("second", "gd"), "iteration"] == 2).all()
    assert (fin.drop(index="gd", level="algorithm").loc["second", "iteration"] == 3).all()
    assert (fin.loc["first", "iteration"] == 3).all()
    assert len((directory / "cells.jsonl").read_text().splitlines()) == 10


def test_the_store_describes_the_folder(tmp_path):
    """folder_cells: every earlier cell, failed ones too, none superseded by this run."""
    def cell(key, alg, status, rep=0):
        return [{"key": key, "experiment": "e", "dataset": "d", "algorithm": alg,
                 "repetition": rep, "record": "final", "status": status}]

    store = ResultStore(tmp_path / "s")
    for rows in (cell("a", "x", "done"), cell("b", "y", "crashed"), cell("c", "z", "done"),
                 cell("d", "w", "max_iter"), cell("d2", "w", "done")):
        store.append(rows)
    resumed = ResultStore(tmp_path / "s", "resume")
    assert list(resumed.folder_cells()) == ["a", "b", "c", "d2"]
    resumed.keep(resumed.reusable("a"))
    resumed.append(cell("c2", "z", "error"))  # this run's cell at c's coordinates
    assert list(resumed.earlier_cells()) == ["b", "d2"]
    assert list(resumed.folder_cells()) == ["b", "d2", "a", "c2"]
    assert [r["status"] for r in resumed.finals()] == ["done", "error"]
    assert len(resumed.frame()) == 4


def test_a_subset_through_the_command_line(fresh_plugins, tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "out"
    cli = CliRunner()
    first = cli.invoke(main, ["run", str(suite_file), "--out", str(out)])
    assert first.exit_code == 0, first.output
    subset = cli.invoke(main, ["run", str(suite_file), "--out", str(out), "-e", "second",
                               "-a", "gd", "--resume"])
    assert subset.exit_code == 0, subset.output
    assert "cover all 8 cells of the folder: 6 from earlier runs, 2 from this one" in \
        " ".join(subset.output.split())
    directory = out / "subset-test"
    assert len(finals(directory)) == 8
    board = pd.read_csv(directory / "leaderboard.csv")
    assert set(board["experiment"]) == {"first", "second"}
    assert set(board["algorithm"]) == {"joint-em", "gd"}
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["cells"] == 2 and manifest["cells_in_folder"] == 8
    assert [r["experiments"] for r in manifest["runs"]] == [["first", "second"], ["second"]]
    html = (directory / "report.html").read_text()
    assert "2 runs wrote into this folder" in html


def test_rounds_split_the_seeds_and_resume_joins_them(fresh_plugins, tmp_path):
    """``--round J/K`` runs the seeds r with r % K == J; the rounds together are the suite."""
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "out"
    cli = CliRunner()
    dry = cli.invoke(main, ["run", str(suite_file), "--out", str(out), "--seeds", "3",
                            "--round", "1/2", "--dry-run"])
    assert "1 seed(s) (round 1/2 of 3) = 2 cells" in " ".join(dry.output.split())
    first = cli.invoke(main, ["run", str(suite_file), "--out", str(out), "--seeds", "3",
                              "--round", "0/2", "-e", "first"])
    assert first.exit_code == 0, first.output
    directory = out / "subset-test"
    assert sorted(finals(directory)["repetition"].unique()) == [0, 2]
    second = cli.invoke(main, ["run", str(suite_file), "--out", str(out), "--seeds", "3",
                               "--round", "1/2", "-e", "first", "--resume"])
    assert second.exit_code == 0, second.output
    fin = finals(directory)
    assert sorted(fin["repetition"]) == [0, 0, 1, 1, 2, 2]  # two algorithms x three seeds
    assert read_manifest(directory)["round"] == "1/2"
    for bad in ("2/2", "1", "a/b", "-1/3"):
        refused = cli.invoke(main, ["run", str(suite_file), "--round", bad])
        assert refused.exit_code == 2 and "is not J/K with 0 <= J < K" in refused.output
