"""The command line, as a user drives it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from moebench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_plugins_json_lists_first_party_with_versions(fresh_plugins):
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    found = {p["name"]: p for p in json.loads(result.output)}
    assert found["joint-em"]["status"] == "loaded"
    assert found["joint-em"]["version"]
    assert found["joint-em"]["registered"] == {"algorithms": ["joint-em"]}


def test_plugins_in_a_pipe_is_one_greppable_line_per_plugin(fresh_plugins):
    result = invoke("plugins")  # CliRunner's output is not a terminal, as `| grep` is not
    assert result.exit_code == 0
    (line,) = [x for x in result.output.splitlines() if x.startswith("moe-models\t")]
    assert line.split("\t")[1:] == ["moebench", line.split("\t")[2], "loaded",
                                     "models: regression-moe"]
    assert all(len(x.split("\t")) == 5 for x in result.output.splitlines())


def test_dash_h_is_help_everywhere():
    for args in (["-h"], ["run", "-h"], ["compare-commits", "-h"]):
        result = invoke(*args)
        assert result.exit_code == 0 and result.output.startswith("Usage: "), args


def test_list_shows_parameters_and_defaults(fresh_plugins):
    result = invoke("list", "algorithms")  # a pipe: one tab-separated line per parameter
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.output.splitlines()]
    assert "joint-em" in {r[0] for r in rows} and "gd" in {r[0] for r in rows}
    (lr,) = [r for r in rows if r[0] == "gd" and r[3] == "lr"]
    assert lr[4:6] == ["float", "0.1"]  # type and default
    data = json.loads(invoke("list", "datasets", "--json").output)
    synth = next(d for d in data if d["name"] == "synthetic-moe")
    assert {"n", "d", "k", "sigma"} <= {p["name"] for p in synth["parameters"]}
    metrics = invoke("list", "metrics").output
    assert "\nparam_error\tcore-metrics\t" in metrics and "\tlower\tneeded\t" in metrics


def test_invalid_suite_exits_nonzero_naming_the_field(fresh_plugins, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "suites" / "smoke.yaml").read_text().replace("max_iter", "maxiter"))
    result = CliRunner().invoke(main, ["run", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "budget.maxiter" in result.output and "unknown key" in result.output
    assert not (tmp_path / "smoke").exists()


def test_unavailable_device_is_a_clear_error(fresh_plugins, tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    result = CliRunner().invoke(main, ["run", str(ROOT / "suites" / "smoke.yaml"), "--out",
                                       str(tmp_path), "--device", "cuda"])
    assert result.exit_code == 1 and "--device cpu" in result.output


def test_run_smoke_and_leaderboard(fresh_plugins, tmp_path):
    result = invoke("run", str(ROOT / "suites" / "smoke.yaml"), "--out", str(tmp_path),
                    "--seeds", "1", "--tables")
    assert result.exit_code == 0, result.output
    directory = tmp_path / "smoke"
    for name in ("results.parquet", "leaderboard.csv", "leaderboard.md", "manifest.json"):
        assert (directory / name).is_file()
    assert "ranked by param_error" in result.output and "joint-em" in result.output
    for name in ("tensor-em", "joint-em", "mirror-em", "gradient-em", "gd"):
        assert name in result.output
    again = invoke("leaderboard", str(directory))
    assert again.exit_code == 0 and "joint-em" in again.output
    md = (directory / "leaderboard.md").read_text()
    assert "| rank | algorithm | mean ± std |" in md


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "moebench"
    assert exe.is_file(), f"the moebench console script is not installed beside {sys.executable}"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert "moebench" in out.stdout


def test_run_prints_why_cells_were_skipped(fresh_plugins, tmp_path):
    suite = tmp_path / "skip.yaml"
    suite.write_text(
        "name: skip\nbudget: {max_iter: 2}\nmetrics: [test_accuracy]\n"
        "datasets:\n  - name: cifar10\n    params: {path: " + str(tmp_path / "nowhere") + "}\n"
        "algorithms:\n  - name: gd\n"
    )
    result = CliRunner().invoke(main, ["run", str(suite), "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert "skipped (1 cell): cifar10:" in result.output


def test_list_shows_the_choices_of_a_parameter(fresh_plugins):
    assert "\toptimizer\t'sgd' | 'adam'\t'sgd'\t" in invoke("list", "algorithms").output


def test_jobs_auto_uses_one_worker_per_usable_core_without_oversubscribing(fresh_plugins,
                                                                           tmp_path):
    import os

    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        "name: tiny\nrepetitions: 2\nbudget: {max_iter: 2}\n"
        "datasets:\n  - name: synthetic-moe\n    params: {n: 300, n_test: 50, d: 3, k: 2}\n"
        "algorithms:\n  - name: gd\n"
    )
    result = invoke("run", str(suite), "--out", str(tmp_path), "--jobs", "auto", "--no-report")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert manifest["jobs"] == cores
    assert manifest["jobs"] * manifest["worker_threads"] <= cores
    bad = CliRunner().invoke(main, ["run", str(suite), "--out", str(tmp_path), "--jobs", "0"])
    assert bad.exit_code == 2 and "neither a positive number of workers nor 'auto'" in bad.output


def test_jobs_beyond_the_machine_are_capped_in_one_line(fresh_plugins, tmp_path):
    """--jobs 100000 used to start hundreds of ~330 MiB workers: it gets one per usable core
    (and no more than memory holds), and says so."""
    import os

    from moebench.execution.limits import WORKER_MEMORY, cap_jobs

    suite = tmp_path / "tiny.yaml"
    suite.write_text("name: tiny\nrepetitions: 1\nbudget: {max_iter: 2}\n"
                     "datasets:\n  - name: synthetic-moe\n    params: {n: 60, n_test: 20, d: 3, "
                     "k: 2}\nalgorithms:\n  - name: gd\n")
    result = invoke("run", str(suite), "--out", str(tmp_path), "--jobs", "100000",
                    "--no-report", "--progress", "none")
    assert result.exit_code == 0, result.output
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    manifest = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    assert manifest["jobs"] <= cores
    notes = [line for line in result.output.splitlines() if "--jobs 100000 capped at" in line]
    assert notes == [f"note: --jobs 100000 capped at {manifest['jobs']} worker(s): {cores} "
                     f"usable core(s), one worker each"
                     + notes[0].split("one worker each")[1]]
    # memory caps too, and a request the machine holds is left alone
    import moebench.execution.limits as limits

    original = limits.available_memory
    try:
        limits.available_memory = lambda: 3 * WORKER_MEMORY
        assert cap_jobs(10**5)[0] == min(cores, 3)
        limits.available_memory = lambda: WORKER_MEMORY // 2
        assert cap_jobs(10**5)[0] == 1
    finally:
        limits.available_memory = original
    assert cap_jobs(1) == (1, None)


TINY_SUITE = ("name: tiny\nrepetitions: 1\nbudget: {max_iter: 2}\n"
              "datasets:\n  - name: synthetic-moe\n    params: {n: 60, n_test: 20, d: 3, k: 2}\n"
              "algorithms:\n  - name: gd\n")


def test_an_empty_out_is_refused_in_one_line_and_writes_nothing(fresh_plugins, tmp_path,
                                                                 monkeypatch):
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    monkeypatch.chdir(tmp_path)
    for empty in ("", " "):
        result = CliRunner().invoke(main, ["run", "tiny.yaml", "--out", empty, "--no-report"])
        assert result.exit_code == 2, result.output
        (error,) = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert error == (f"Error: Invalid value for '--out': {empty!r} names no folder "
                         "(give '.' for the current one)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


@pytest.mark.parametrize("option", ["--timeout", "--budget-timeout"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "0", "-1", "soon"])
def test_time_limits_must_be_positive_and_finite(option, value, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "tiny.yaml"), "--out",
                                       str(tmp_path), "--dry-run", option, value])
    assert result.exit_code == 2
    assert (f"Error: Invalid value for '{option}': '{value}' is not a positive, finite number "
            "of seconds") in result.output


def test_finite_time_limits_are_accepted(fresh_plugins, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "tiny.yaml"), "--out",
                                       str(tmp_path), "--dry-run", "--timeout", "1e3",
                                       "--budget-timeout", "2.5"])
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_a_suite_path_that_is_a_device_says_so_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["run", "/dev/zero", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output == ("error: invalid suite /dev/zero:\n"
                             "  (file): /dev/zero is not a regular file: a character device\n")
