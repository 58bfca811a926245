"""A third-party algorithm package, built from the plugin guide, installed with pip."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"


def guide_files() -> dict[str, str]:
    """The files the guide shows, keyed by the path in their ``<!-- file: -->`` marker."""
    text = GUIDE.read_text()
    blocks = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S)
    return {path: body for path, body in blocks}


@pytest.fixture
def installed_example(tmp_path):
    files = guide_files()
    assert set(files) == {"moebench-momentum/pyproject.toml",
                          "moebench-momentum/moebench_momentum.py"}
    for rel, body in files.items():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                          str(tmp_path / "moebench-momentum")], check=True)
    try:
        yield
    finally:
        subprocess.run(pip + ["uninstall", "-y", "-q", "moebench-momentum"], check=True)


def moebench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "moebench"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd)


def test_installed_package_shows_up_and_runs(installed_example, tmp_path):
    listed = moebench("plugins", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    found = {p["name"]: p for p in json.loads(listed.stdout)}
    assert found["momentum"]["status"] == "loaded", found["momentum"]["error"]
    assert found["momentum"]["distribution"] == "moebench-momentum"
    assert found["momentum"]["version"] == "0.1.0"
    assert found["momentum"]["registered"] == {"algorithms": ["momentum-gd"]}

    suite = tmp_path / "third.yaml"
    suite.write_text(textwrap.dedent("""
        name: third-party
        repetitions: 2
        budget: {max_iter: 20}
        leaderboard: {rank_by: train_nll}
        datasets:
          - name: synthetic-moe
            params: {n: 500, d: 3, k: 2, sigma: 0.3}
        algorithms:
          - name: joint-em
          - name: momentum-gd
            params: {lr: 0.05, momentum: 0.8}
    """))
    run = moebench("run", str(suite), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr + run.stdout
    assert "Warning" not in run.stderr, run.stderr
    board = (tmp_path / "out" / "third-party" / "leaderboard.csv").read_text()
    row = next(line for line in board.splitlines() if ",momentum-gd," in line)
    assert ",1.0," in row  # success rate 100 %

    import importlib

    from moebench import plugins
    from moebench.testing import check_algorithm

    importlib.invalidate_caches()
    plugins.reset_plugins()
    try:
        assert len(check_algorithm("momentum-gd")) >= 7
    finally:
        plugins.reset_plugins()
