"""The results folder under damage and contention (issue 21): a damaged table or manifest,
two runs into one folder, links in the folder, a disk that fills while the outputs are
written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from moebench.cli import main
from moebench.reports.results import ResultsRebuilt
from moebench.runner import run_suite
from moebench.suite import parse_suite

SUITE = """
name: folder-test
seed: 3
repetitions: 1
budget: {max_iter: 3, timeout: 5, wall_timeout: 60}
metrics: [param_error, train_nll]
datasets:
  - name: synthetic-moe
    params: {n: 120, n_test: 40, d: 3, k: 2, sigma: 0.3}
algorithms:
  - name: gd
  - name: joint-em
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A results folder of a finished two-cell run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished")
    return run_suite(parse_suite(textwrap.dedent(SUITE)), out, html_report=False)


@pytest.fixture
def folder(finished, tmp_path) -> Path:
    """A copy of the finished run's folder, to damage."""
    return Path(shutil.copytree(finished, tmp_path / "folder-test"))


def _commands(folder: Path, finished: Path) -> dict[str, list[str]]:
    return {"report": ["report", str(folder), "--no-html"],
            "leaderboard": ["leaderboard", str(folder)],
            "compare": ["compare", str(finished), str(folder)]}


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- item 3: a damaged results.parquet or manifest.json -----------------------------------------

@pytest.mark.parametrize("command", ["report", "leaderboard", "compare"])
def test_a_damaged_table_is_rebuilt_from_cells_jsonl_and_rewritten(finished, folder, command):
    original = pd.read_parquet(finished / "results.parquet")
    (folder / "results.parquet").write_bytes(b"PAR1garbage")
    with pytest.warns(ResultsRebuilt, match=r"results\.parquet could not be read \(ArrowInvalid"
                                            r".*rebuilt from cells\.jsonl \(2 cells\) and "
                                            r"rewritten"):
        result = CliRunner().invoke(main, _commands(folder, finished)[command])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "results.parquet"), original)


def test_the_rebuilt_notice_is_one_line_on_the_command_line(folder):
    (folder / "results.parquet").write_bytes(b"PAR1garbage")
    done = subprocess.run([sys.executable, "-m", "moebench.cli", "leaderboard", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = _one_line(done.stderr)
    assert line.startswith("warning: ") and "rebuilt from cells.jsonl" in line


@pytest.mark.parametrize("command", ["report", "leaderboard", "compare"])
def test_a_damaged_table_without_cells_is_one_clear_line(finished, folder, command):
    (folder / "results.parquet").write_bytes(b"PAR1garbage")
    (folder / "cells.jsonl").unlink()
    result = CliRunner().invoke(main, _commands(folder, finished)[command])
    assert result.exit_code == (2 if command == "compare" else 1)
    line = _one_line(result.output)
    assert line.startswith("error: cannot read ") and "results.parquet" in line
    assert "no cells.jsonl" in line and "--overwrite" in line


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"metric_directions": [1]}',
                                     '{"metric_directions": {"param_error": "up"}}'])
@pytest.mark.parametrize("command", ["report", "leaderboard", "compare"])
def test_a_damaged_manifest_is_one_clear_line(finished, folder, command, content):
    (folder / "manifest.json").write_text(content)
    result = CliRunner().invoke(main, _commands(folder, finished)[command])
    assert result.exit_code == (2 if command == "compare" else 1)
    line = _one_line(result.output)
    assert line.startswith("error: cannot read ") and "manifest.json" in line
    assert "--resume" in line
    assert (folder / "manifest.json").read_text() == content  # nothing guessed or rewritten


def test_resume_rewrites_a_damaged_manifest_without_recomputing(folder):
    (folder / "manifest.json").write_text("{not json")
    run_suite(parse_suite(textwrap.dedent(SUITE)), folder.parent, mode="resume",
              html_report=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["reused_cells"] == 2 and manifest["state"] == "complete"
    assert manifest["metric_directions"] == {"param_error": "min", "train_nll": "min"}
