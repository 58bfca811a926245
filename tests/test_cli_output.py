"""What the command line prints: errors that blame the option a user typed, the devices this
machine can use, listings that survive a pipe, complete command summaries, the report's
headline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from moebench import cli
from moebench.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "suites" / "smoke.yaml")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def no_cuda(monkeypatch):
    """A CPU-only machine, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def terminal(monkeypatch):
    """stdout as a 100-column terminal (CliRunner's output is a pipe otherwise)."""
    monkeypatch.setattr(cli, "console", Console(force_terminal=True, color_system=None,
                                                width=100))


def test_a_misspelt_device_option_blames_the_option_not_the_suite(fresh_plugins):
    result = invoke("run", SMOKE, "--device", "cudaa", "--dry-run")
    assert result.exit_code == 2
    assert result.output == ("error: --device 'cudaa': unknown device; did you mean 'cuda'? "
                             "(valid: cpu, cuda)\n")


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_unavailable_device_stops_before_anything_starts(fresh_plugins, no_cuda, tmp_path,
                                                            dry_run):
    args = ["run", SMOKE, "--device", "cuda", "--out", str(tmp_path)]
    result = invoke(*args, *(["--dry-run"] if dry_run else []))
    assert result.exit_code == 1  # as the run itself exits when it cannot start
    first = result.output.splitlines()[0]
    assert first.startswith("error: device 'cuda' is not available: ")
    assert "--device cpu" in first
    assert "started" not in result.output and "cells" not in result.output
    assert not (tmp_path / "smoke").exists()


def test_an_available_device_option_still_runs_the_dry_run(fresh_plugins):
    result = invoke("run", SMOKE, "--device", "cpu", "--dry-run")
    assert result.exit_code == 0 and "(dry run: nothing ran)" in result.output


def test_list_devices_says_which_are_available_and_why_not(fresh_plugins, no_cuda):
    import json

    rows = {d["name"]: d for d in json.loads(invoke("list", "devices", "--json").output)}
    assert rows["cpu"]["available"] is True and rows["cpu"]["unavailable_reason"] is None
    assert rows["cuda"]["available"] is False
    assert "torch.cuda.is_available() is False" in rows["cuda"]["unavailable_reason"]
    piped = {line.split("\t")[0]: line.split("\t")[3]
             for line in invoke("list", "devices").output.splitlines()}
    assert piped["name"] == "available" and piped["cpu"] == "yes"
    assert piped["cuda"].startswith("no: torch.cuda.is_available() is False")


def test_list_devices_on_a_terminal_says_available(fresh_plugins, no_cuda, terminal):
    text = " ".join(invoke("list", "devices").output.split())
    assert "available: yes" in text
    assert "available: no: torch.cuda.is_available() is False" in text


def test_list_devices_marks_a_present_gpu_available(fresh_plugins, monkeypatch):
    import json

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    rows = {d["name"]: d for d in json.loads(invoke("list", "devices", "--json").output)}
    assert rows["cuda"]["available"] is True


def tsv(text: str) -> list[list[str]]:
    """Tab-separated lines: each as its cells; every line must have the header's count."""
    rows = [line.split("\t") for line in text.splitlines()]
    assert rows and all(len(r) == len(rows[0]) for r in rows), text
    return rows


def test_list_in_a_pipe_is_one_uncut_line_per_parameter(fresh_plugins):
    result = invoke("list", "algorithms")  # CliRunner's stdout is not a terminal, as `> f`
    rows = tsv(result.stdout)
    header = rows[0]
    assert header == ["name", "plugin", "summary", "parameter", "type", "default",
                      "description"]
    optimizer = next(dict(zip(header, r, strict=True)) for r in rows
                     if r[0] == "gd" and r[3] == "optimizer")
    assert optimizer["description"] == "torch optimiser: plain gradient descent (sgd) or adam"
    assert max(len(line) for line in result.stdout.splitlines()) > 80  # not wrapped at 80
    metrics = tsv(invoke("list", "metrics").stdout)
    assert metrics[0][3:5] == ["better", "ground truth"]
    assert ["param_error", "core-metrics"] == metrics[[r[0] for r in metrics].index(
        "param_error")][:2]


def test_list_on_a_terminal_keeps_its_layout(fresh_plugins, terminal):
    out = invoke("list", "algorithms").output
    assert "\t" not in out and "    lr: float = default 0.1  learning rate" in out


def test_data_list_in_a_pipe_is_tab_separated_rows(monkeypatch, tmp_path):
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path / "cache"))
    result = invoke("data", "list", "--no-verify")
    assert result.exit_code == 0
    rows = tsv(result.stdout)
    assert rows[0] == ["dataset", "files present", "where", "verified"]
    assert not any(ch in result.stdout for ch in "┃│┏└")  # no box, no wrapped cells
    cifar = next(r for r in rows if r[0] == "cifar10")
    assert cifar[2].startswith("not found; searched ") and str(tmp_path / "cache") in cifar[2]
    assert "searched in this order" in result.stderr  # the note stays off the rows


def test_data_list_on_a_terminal_is_a_table(monkeypatch, tmp_path, terminal):
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path / "cache"))
    out = invoke("data", "list", "--no-verify").output
    assert "moebench data" in out and "┃ dataset" in out and "searched in this order" in out


def test_plugins_in_a_pipe_has_a_header_line(fresh_plugins):
    rows = tsv(invoke("plugins").stdout)
    assert rows[0] == ["plugin", "distribution", "version", "status", "registers"]


def commands(group=main, path=("moebench",)):
    """Every command under ``group``, with its path."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))


def test_every_command_summary_is_a_complete_short_sentence():
    found = dict(commands())
    assert {("moebench", "run"), ("moebench", "report"), ("moebench", "data", "fetch")} <= set(
        found)
    for path, command in found.items():
        summary = command.get_short_help_str(limit=45)  # what `moebench --help` lists
        assert summary == command.short_help, path  # never click's cut first sentence
        assert summary.endswith((".", "?")) and len(summary) < 70, (path, summary)
    for args in (["--help"], ["data", "--help"]):
        listing = invoke(*args).output.split("Commands:")[1]
        assert "..." not in listing
        assert all(len(line) <= 80 for line in listing.splitlines()), listing  # one line each


PAPER_SUITE = """
name: headline
seed: 1
repetitions: 2
budget: {max_iter: 5}
experiments:
  - name: tiny
    metrics: [param_error, train_nll]
    reference:
      source: A paper
      values:
        - {dataset: synthetic-moe, algorithm: joint-em, metric: param_error, mean: 1.0e-6}
      claims:
        - {text: EM beats GD, better: joint-em, than: gd, metric: train_nll}
    datasets:
      - name: synthetic-moe
        params: {n: 300, n_test: 60, d: 3, k: 2, sigma: 0.3}
    algorithms:
      - name: joint-em
      - name: gd
        params: {lr: 0.01}
"""


def test_report_prints_the_headline_first_then_where_it_wrote(fresh_plugins, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(PAPER_SUITE)
    done = invoke("run", str(suite), "--out", str(tmp_path), "--no-report", "--progress",
                  "none")
    assert done.exit_code == 0, done.output
    headline = done.stdout.splitlines()[0]
    assert headline.startswith("reproduction: ") and "claim" in headline
    result = invoke("report", str(tmp_path / "headline"), "--no-html")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == headline  # the same line as after the run
    assert lines[1:] == [f"wrote {tmp_path / 'headline' / 'REPRODUCTION.md'}"]


def test_report_and_leaderboard_failures_are_one_line(fresh_plugins, tmp_path):
    """--to a folder that cannot be made, an empty --to, a link in the folder and a
    non-finite compare factor: one line each, never a traceback (issue 21, item 4)."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(PAPER_SUITE)
    assert invoke("run", str(suite), "--out", str(tmp_path), "--no-report", "--progress",
                  "none").exit_code == 0
    run = tmp_path / "headline"
    bad = invoke("report", str(run), "--to", "/proc/moebench-cannot-be-here")
    assert bad.exit_code == 1
    assert "error: cannot write the report into /proc/moebench-cannot-be-here: " in bad.output
    assert "Traceback" not in bad.output
    empty = invoke("report", str(run), "--to", "")
    assert empty.exit_code == 2 and "'' names no folder" in empty.output
    victim = tmp_path / "victim.md"
    victim.write_text("keep me\n")
    (run / "leaderboard.md").unlink(missing_ok=True)
    (run / "leaderboard.md").symlink_to(victim)
    linked = invoke("leaderboard", str(run))
    assert linked.exit_code == 1 and "is a symbolic link" in linked.output
    assert victim.read_text() == "keep me\n"  # nothing written through the link
    for option in ("--factor", "--time-factor"):
        for value in ("inf", "nan", "0.5"):
            refused = invoke("compare", str(run), str(run), option, value)
            assert refused.exit_code == 2 and "not a finite ratio of at least 1" in refused.output


def test_a_bad_memory_limit_or_scheduler_stops_before_started_and_writes_nothing(
        fresh_plugins, tmp_path):
    suite = tmp_path / "mem.yaml"
    suite.write_text("name: m\nmemory_limit: 100MiB\nbudget: {max_iter: 2}\ndatasets:\n"
                     "  - {name: synthetic-moe, params: {n: 60, n_test: 20, d: 3, k: 2}}\n"
                     "algorithms:\n  - name: gd\n")
    mem = invoke("run", str(suite), "--out", str(tmp_path / "a"), "--progress", "lines")
    assert mem.exit_code == 2 and "memory_limit: 100 MiB is below 256 MiB" in mem.output
    suite.write_text(suite.read_text().replace("memory_limit: 100MiB\n", ""))
    sched = invoke("run", str(suite), "--out", str(tmp_path / "b"), "--scheduler",
                   "not-an-address", "--progress", "lines")
    assert sched.exit_code == 1 and "--scheduler 'not-an-address'" in sched.output
    for result in (mem, sched):
        assert "started" not in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
