"""A third-party package written from the plugin guide alone (docs/examples/moebench-annealed-em):
installed with pip, listed by ``moebench plugins``, passing the conformance kit, run in a suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "moebench-annealed-em"


def test_example_package_installs_passes_the_kit_and_runs(tmp_path):
    site = tmp_path / "site"
    # into a target folder: offline, and the shared environment stays as it is
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(site), str(EXAMPLE)],
                   check=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    listed = run("-m", "moebench.cli", "plugins", "--json")
    found = {p["name"]: p for p in json.loads(listed.stdout)}
    info = found["annealed-em"]
    assert info["status"] == "loaded", info["error"]
    assert (info["distribution"], info["version"]) == ("moebench-annealed-em", "0.1.0")
    assert info["registered"] == {"algorithms": ["annealed-em"], "datasets": ["piecewise-linear"]}

    kit = run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests"))
    assert "2 passed" in kit.stdout

    suite = tmp_path / "annealed.yaml"
    suite.write_text(textwrap.dedent("""
        name: third-party
        repetitions: 2
        budget: {max_iter: 40}
        metrics: [train_nll, test_mse]
        leaderboard: {rank_by: test_mse}
        datasets:
          - name: piecewise-linear
            params: {n: 400, n_test: 100, d: 3}
        algorithms:
          - name: joint-em
          - name: annealed-em
            params: {beta0: 0.2}
    """))
    run("-m", "moebench.cli", "run", str(suite), "--out", str(tmp_path / "out"))
    board = (tmp_path / "out" / "third-party" / "leaderboard.csv").read_text()
    row = next(line for line in board.splitlines() if ",annealed-em," in line)
    assert ",1.0," in row  # success rate 100 %
