"""The algorithm clocks (CPU by default on CPU devices, wall on request), compilation kept apart,
and the run's time accounting in the manifest."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest

from moebench import clock as clock_module
from moebench.clock import AlgorithmClock, default_clock
from moebench.reports.results import read_manifest, read_results
from moebench.runner import run_suite
from moebench.suite import parse_suite

SUITE = """
name: clock-test
seed: 2
repetitions: 2
budget: {max_iter: 4, timeout: 60CLOCK}
metrics: [train_nll, test_mse]
datasets:
  - name: synthetic-moe
    params: {n: 400, n_test: 100, d: 3, k: 2, sigma: 0.3}
algorithms:
  - name: joint-em
  - name: gd
"""


def make(clock: str = ""):
    return parse_suite(textwrap.dedent(SUITE).replace("CLOCK", clock))


def test_cpu_clock_is_the_default_on_cpu_and_recorded_beside_wall(fresh_plugins, tmp_path):
    directory = run_suite(make(), tmp_path)
    frame = read_results(directory)
    fin = frame[frame["record"] == "final"]
    assert set(fin["clock"]) == {"cpu"}
    iters = frame[frame["record"] == "iteration"]
    assert (iters["cpu_time"] >= 0).all() and (iters["time"] >= 0).all()
    for _, cell in iters.groupby(["algorithm", "repetition"]):
        assert cell["cpu_time"].is_monotonic_increasing and cell["time"].is_monotonic_increasing
    acc = read_manifest(directory)["time_accounting"]
    assert set(acc) == {"algorithm_wall", "algorithm_cpu", "metrics", "data", "compilation",
                        "worker_start", "wall"}
    assert all(v >= 0 for v in acc.values())
    assert acc["algorithm_wall"] == pytest.approx(fin["time"].sum(), rel=1e-3, abs=1e-3)
    assert acc["data"] > 0 and acc["metrics"] > 0


def test_wall_clock_on_request_and_timeout_names_its_clock(fresh_plugins, tmp_path):
    directory = run_suite(make(", clock: wall"), tmp_path)
    fin = read_results(directory).query("record == 'final'")
    assert set(fin["clock"]) == {"wall"}
    tiny = parse_suite(textwrap.dedent(SUITE).replace("timeout: 60CLOCK", "timeout: 1.0e-9"))
    out = run_suite(tiny, tmp_path / "t")
    fin = read_results(out).query("record == 'final'")
    assert set(fin["status"]) == {"timeout"}
    assert fin["message"].str.fullmatch(
        r"stopped after \S+ s of cpu time \(budget 1e-09 s\) at iteration 0").all()
    board = (out / "leaderboard.md").read_text()
    rows = [line.split(" | ") for line in board.splitlines() if line.startswith("| 1= |")]
    # both stopped at the same initial point: an exact tie, said as such
    assert sorted(r[1] for r in rows) == ["gd", "joint-em"]
    assert all(r[2].endswith(" †") for r in rows)  # every row's score is marked
    assert ("\n† some seeds were cut short by the timeout (status `timeout`): their final values "
            "come from fewer iterations than the budget's `max_iter`.\n") in board


def test_compilation_is_not_on_the_algorithm_clock(monkeypatch):
    spent = {"compile": 0.0}
    monkeypatch.setattr(clock_module, "compile_seconds", lambda: spent["compile"])
    clock = AlgorithmClock()
    clock.start()
    x = np.arange(200_000.0)
    for _ in range(20):
        x = np.sqrt(x + 1.0)
    spent["compile"] = 1000.0  # a compilation of 1000 s "happened" inside the interval
    clock.stop()
    assert clock.compile == 1000.0
    # the interval minus the 1000 s of compilation is negative: both clocks stay at 0
    assert clock.wall == 0.0 and clock.cpu == 0.0


def test_default_clock():
    assert default_clock("cpu") == "cpu" and default_clock("cuda") == "wall"


def test_workers_share_a_persistent_compile_cache(monkeypatch, tmp_path):
    from moebench.execution.limits import use_persistent_compile_cache

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path))
    assert use_persistent_compile_cache() == str(tmp_path / "torchinductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    assert use_persistent_compile_cache() == "/elsewhere"  # the user's choice wins


def test_workers_wait_passively_unless_the_user_says_otherwise(monkeypatch):
    from moebench.execution import local

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    pool = local.worker_pool(1, 1)
    assert pool.schedule(local._environment_value, ("OMP_WAIT_POLICY",)).result() == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in local.os.environ  # the parent's environment is unchanged
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    pool = local.worker_pool(1, 1)  # another environment: a new pool
    assert pool.schedule(local._environment_value, ("OMP_WAIT_POLICY",)).result() == "ACTIVE"
    local.shutdown_pool()


def test_leaderboard_marks_seeds_that_skipped_a_phase():
    import pandas as pd

    from moebench.reports.leaderboard import leaderboard, to_markdown

    rows = [{"record": "final", "experiment": "e", "dataset": "d", "algorithm": a,
             "repetition": r, "status": "max_iter", "time": 1.0, "iteration": 5,
             "test_mse": 1.0 + r, "extra.joint": j}
            for a, js in (("tensor-em+refine", (0, 1)), ("joint-em", (None, None)))
            for r, j in enumerate(js)]
    board = leaderboard(pd.DataFrame(rows), "test_mse", {"test_mse": "min"})
    marks = board.set_index("algorithm")["phase_skipped"]
    assert marks["tensor-em+refine"] == 1 and marks["joint-em"] == 0
    md = to_markdown(board, {"test_mse": "min"})
    assert "| tensor-em+refine | 1.5 ± 0.5 ‡ |" in md and "| joint-em | 1.5 ± 0.5 |" in md
    assert ("\n‡ in some seeds a phase of the algorithm did not run (e.g. tensor-em's joint-EM "
            "refinement: `extra.joint = 0`; see the cells' messages).\n") in md


def test_run_prints_where_the_time_went(fresh_plugins, tmp_path):
    from click.testing import CliRunner

    from moebench.cli import main

    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(textwrap.dedent(SUITE).replace("CLOCK", ""))
    result = CliRunner().invoke(main, ["run", str(suite_file), "--out", str(tmp_path / "o"),
                                       "--no-report"])
    assert result.exit_code == 0, result.output
    # redirected, the summary's lines are whole lines (no wrapping at 80 columns)
    (line,) = [x for x in result.output.splitlines() if x.startswith("time: ")]
    assert re.fullmatch(r"time: wall \d+\.\d s; summed over cells: algorithms \d+\.\d s wall / "
                        r"\d+\.\d s cpu, metrics \d+\.\d s, data \d+\.\d s, compilation "
                        r"\d+\.\d s, worker start \d+\.\d s \(1 worker\(s\)\)", line), line
    assert all(len(x) < 200 for x in result.output.splitlines())
