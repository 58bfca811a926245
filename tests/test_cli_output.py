"""What the command line prints: errors that blame the option a user typed, the devices this
machine can use, listings that survive a pipe, complete command summaries, the report's
headline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from moebench.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "suites" / "smoke.yaml")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def no_cuda(monkeypatch):
    """A CPU-only machine, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


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
    text = " ".join(invoke("list", "devices").output.split())
    assert "available: yes" in text
    assert "available: no: torch.cuda.is_available() is False" in text


def test_list_devices_marks_a_present_gpu_available(fresh_plugins, monkeypatch):
    import json

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    rows = {d["name"]: d for d in json.loads(invoke("list", "devices", "--json").output)}
    assert rows["cuda"]["available"] is True
