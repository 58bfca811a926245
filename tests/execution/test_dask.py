"""The same suite through --jobs 1, --jobs 2 and Dask (a LocalCluster, and a scheduler with two
worker processes on 127.0.0.1, one of them killed mid-run) gives the same metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moebench.reports.results import read_manifest, read_results
from moebench.runner import run_suite
from moebench.suite import load_suite

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "suites" / "smoke.yaml"
KEYS = ["experiment", "dataset", "algorithm", "repetition"]
METRICS = ["param_error", "train_nll", "test_mse"]


def finals(directory: Path) -> pd.DataFrame:
    frame = read_results(directory)
    fin = frame[frame["record"] == "final"]
    return (fin[KEYS + ["status", "iteration", "threads"] + METRICS].sort_values(KEYS)
            .reset_index(drop=True))


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("local")
    suite = load_suite(SMOKE)
    one = finals(run_suite(suite, base / "one", jobs=1, seeds=1))
    two = finals(run_suite(suite, base / "two", jobs=2, seeds=1))
    return one, two


def assert_same_metrics(got: pd.DataFrame, expected: pd.DataFrame, exact: bool) -> None:
    pd.testing.assert_frame_equal(got[KEYS + ["status", "iteration"]],
                                  expected[KEYS + ["status", "iteration"]])
    for m in METRICS:
        if exact:
            np.testing.assert_array_equal(got[m].to_numpy(), expected[m].to_numpy(), err_msg=m)
        else:  # another number of torch threads per worker: sums in another order
            np.testing.assert_allclose(got[m].to_numpy(), expected[m].to_numpy(), rtol=1e-7,
                                       atol=1e-10, err_msg=m)


def test_jobs_one_and_two_agree(local_runs):
    one, two = local_runs
    assert len(one) == 16 and set(one["status"]) <= {"done", "max_iter", "timeout", "skipped"}
    # the smoke suite's cells are small: one torch thread each whatever --jobs (execution.limits
    # .cell_threads), so the two runs are bit-for-bit the same
    assert (one["threads"] == 1).all() and (two["threads"] == 1).all()
    assert_same_metrics(two, one, exact=True)


def test_dask_local_cluster_matches_local_executor(local_runs, tmp_path):
    _, two = local_runs
    directory = run_suite(load_suite(SMOKE), tmp_path, jobs=2, seeds=1, executor="dask")
    assert read_manifest(directory)["executor"] == "dask"
    assert_same_metrics(finals(directory), two, exact=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_dask_scheduler_with_a_worker_killed_mid_run(local_runs, tmp_path):
    _, two = local_runs
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    bindir = Path(sys.executable).parent
    dask = [str(bindir / "dask")] if (bindir / "dask").exists() else \
        [sys.executable, "-m", "dask"]
    procs = [_start(dask + ["scheduler", "--host", "127.0.0.1", "--port", str(port),
                            "--no-dashboard"], env, tmp_path / "scheduler.log")]
    try:
        time.sleep(2)
        for i in range(2):
            procs.append(_start(dask + ["worker", address, "--nthreads", "1", "--no-nanny",
                                        "--host", "127.0.0.1", "--no-dashboard",
                                        "--name", f"w{i}"], env, tmp_path / f"worker{i}.log"))
        out = tmp_path / "out"
        run = subprocess.Popen([sys.executable, "-m", "moebench.cli", "run", str(SMOKE), "--out",
                                str(out), "--seeds", "1", "--jobs", "2", "--executor", "dask",
                                "--scheduler", address], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
        cells = out / "smoke" / "cells.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            if cells.is_file() and len(cells.read_bytes().splitlines()) >= 4:
                break
            time.sleep(0.1)
        assert run.poll() is None, run.stdout.read()
        _stop(procs[1])  # one worker (and its cell processes) dies mid-run
        output, _ = run.communicate(timeout=400)
        assert run.returncode == 0, output
        got = finals(out / "smoke")
        assert not got.duplicated(KEYS).any()
        assert_same_metrics(got, two, exact=True)
    finally:
        for proc in procs:
            _stop(proc)
