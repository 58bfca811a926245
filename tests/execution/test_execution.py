"""Execution that survives faults: killable workers, hard limits, the store, resume, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import fake_distribution

from moebench import plugins
from moebench.cli import main
from moebench.errors import SuiteError
from moebench.execution.limits import memory_limit_supported
from moebench.execution.store import ResultsExist, ResultStore, read_cell_lines
from moebench.reports.results import read_manifest, read_results
from moebench.runner import run_suite
from moebench.suite import parse_size, parse_suite

ROOT = Path(__file__).resolve().parents[2]

FAULTS = '''
    import ctypes
    import os
    import time

    import torch
    from pydantic import Field

    from moebench import Algorithm, Params, hookimpl
    from moebench.algorithm import Iterate


    class Fault(Algorithm):
        """Misbehaves in the way its ``how`` parameter names."""
        name = "fault"

        class Params(Params):
            how: str = Field(description="what goes wrong")

        def fit(self, problem, init, callback):
            how = self.params.how
            if how == "tensor-objective":
                t = 0
                while callback(Iterate(t, init, objective=torch.tensor(1.0 / (t + 1)))):
                    t += 1
                return init
            if how == "string-objective":
                callback(Iterate(0, init, objective="low"))
                return init
            if how == "mutate":  # writes into the data and the initial point it was given
                callback(Iterate(0, init, objective=1.0))
                problem.X.mul_(0.0)
                problem.y.add_(5.0)
                for v in init.values():
                    v.add_(1.0)
                return init
            if how == "sleepy-reporter":  # reports every 0.3 s while sleeping (no CPU time)
                t = 0
                while callback(Iterate(t, init, objective=1.0)):
                    time.sleep(0.3)
                    t += 1
                return init
            if how.startswith("burn"):  # burn:SECONDS of CPU, then return
                end = time.thread_time() + float(how.split(":")[1])
                while time.thread_time() < end:
                    pass
                callback(Iterate(0, init, objective=1.0))
                return init
            if how == "overrun":  # ignores the callback's stop and keeps iterating
                for t in range(40):
                    callback(Iterate(t, init, objective=1.0))
                    time.sleep(0.02)
                return init
            callback(Iterate(0, init, objective=1.0))
            if how == "hang":
                time.sleep(600)
            elif how == "slow-return":  # 1 s of CPU without reporting (both clocks run)
                end = time.thread_time() + 1.0
                while time.thread_time() < end:
                    pass
            elif how == "abort":
                os.abort()
            elif how == "segfault":
                ctypes.string_at(0)
            elif how == "sigkill":  # what the kernel's OOM killer does
                os.kill(os.getpid(), 9)
            elif how == "os-exit":
                os._exit(7)
            elif how == "system-exit":
                raise SystemExit(3)
            elif how == "keyboard-interrupt":
                raise KeyboardInterrupt
            elif how == "hog":
                torch.empty(2**32, dtype=torch.float64).fill_(1.0)  # 32 GiB
            return init


    @hookimpl
    def register_algorithms(register):
        register(Fault)
'''

IMPORT_EXIT = '''
    raise SystemExit("this plugin calls sys.exit at import")
'''

IMPORT_INTERRUPT = '''
    raise KeyboardInterrupt
'''


@pytest.fixture
def fault_plugins(tmp_path, monkeypatch, fresh_plugins):
    """A fake installed distribution with misbehaving plugins."""
    site = fake_distribution(
        tmp_path / "site", "mb-faults",
        {"mb_faults": FAULTS, "mb_import_exit": IMPORT_EXIT,
         "mb_import_interrupt": IMPORT_INTERRUPT},
        {"faults": "mb_faults", "import-exit": "mb_import_exit",
         "import-interrupt": "mb_import_interrupt"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    return site


SUITE = """
name: exec-test
seed: 5
repetitions: 1
budget: {max_iter: 5, timeout: 0.5, wall_timeout: 20}
metrics: [param_error, train_nll, test_mse]
datasets:
  - name: synthetic-moe
    params: {n: 300, n_test: 100, d: 3, k: 2, sigma: 0.3}
algorithms:
"""


def make_suite(algorithms: list[str], extra: str = "", base: str = SUITE):
    text = textwrap.dedent(base).replace("algorithms:\n", extra + "algorithms:\n")
    text += "".join(f"  - {a}\n" for a in algorithms)
    return parse_suite(text)


def finals(directory: Path) -> pd.DataFrame:
    frame = read_results(directory)
    return frame[frame["record"] == "final"].set_index("algorithm")


def fault(how: str) -> str:
    return f"{{name: fault, label: {how}, params: {{how: {how}}}}}"


def test_each_fault_affects_only_its_own_cell(fault_plugins, tmp_path):
    hows = ["hang", "sleepy-reporter", "abort", "segfault", "sigkill", "os-exit", "system-exit",
            "keyboard-interrupt", "tensor-objective", "string-objective", "overrun", "slow-return"]
    memory = "memory_limit: 2GiB\n" if memory_limit_supported() else ""
    if memory:
        hows.append("hog")
    entries = [fault(h) if h != "sleepy-reporter" else
               fault(h)[:-1] + ", budget: {max_iter: 100000}}" for h in hows]
    suite = make_suite(["{name: joint-em}"] + entries + ["{name: gd}"],
                       extra=memory)
    directory = run_suite(suite, tmp_path, jobs=2)
    fin = finals(directory)
    assert len(fin) == len(hows) + 2
    # the plugins that broke the import were recorded, the others loaded
    infos = {p.name: p for p in plugins.plugin_infos()}
    assert infos["import-exit"].status == "failed" and "SystemExit" in infos["import-exit"].error
    assert infos["import-interrupt"].status == "failed"
    assert fin.loc["joint-em", "status"] == "max_iter"
    assert fin.loc["gd", "status"] == "max_iter"
    assert fin.loc["hang", "status"] == "timeout"
    assert "killed after 20 s" in fin.loc["hang", "message"]
    for how, text in (("abort", "SIGABRT"), ("segfault", "SIGSEGV"), ("os-exit", "exit code 7"),
                      ("sigkill", "SIGKILL (Killed), as the kernel's out-of-memory killer")):
        assert fin.loc[how, "status"] == "crashed", how
        assert text in fin.loc[how, "message"], fin.loc[how, "message"]
    assert fin.loc["system-exit", "status"] == "error"
    assert "SystemExit" in fin.loc["system-exit", "message"]
    assert fin.loc["keyboard-interrupt", "status"] == "error"
    assert "KeyboardInterrupt" in fin.loc["keyboard-interrupt", "message"]
    # a 0-d tensor objective is coerced; a string one fails its cell with a clear message
    assert fin.loc["tensor-objective", "status"] == "max_iter"
    iters = read_results(directory).query("record == 'iteration' and algorithm == "
                                          "'tensor-objective'")
    assert iters["objective"].tolist() == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6])
    assert fin.loc["string-objective", "status"] == "error"
    assert "Iterate.objective must be a Python float" in fin.loc["string-objective", "message"]
    # iterations after the stop are neither recorded nor timed
    assert fin.loc["overrun", "iteration"] == 5
    assert "after the runner said stop" in fin.loc["overrun", "message"]
    assert "stopped by an exception raised in its callback" in fin.loc["overrun", "message"]
    assert fin.loc["overrun", "status"] == "max_iter"
    # one that keeps reporting but never spends CPU time stops before the kill, rows kept
    assert fin.loc["sleepy-reporter", "status"] == "timeout"
    assert "near the hard wall-clock limit" in fin.loc["sleepy-reporter", "message"]
    assert fin.loc["sleepy-reporter", "iteration"] > 10
    assert fin.loc["overrun", "time"] < 0.5
    # returning long after the budget is a timeout, not a success
    assert fin.loc["slow-return", "status"] == "timeout"
    assert "without reporting in time" in fin.loc["slow-return", "message"]
    if memory:
        assert fin.loc["hog", "status"] == "crashed"
        assert "out of memory (memory_limit 2 GiB)" in fin.loc["hog", "message"]
    # one bad cell never costs the run its outputs
    for name in ("results.parquet", "leaderboard.csv", "leaderboard.md"):
        assert (directory / name).is_file(), name
    manifest = read_manifest(directory)
    assert manifest["state"] == "complete" and manifest["interrupted"] is False
    assert manifest["status_counts"]["crashed"] == 4 + bool(memory)
    board = pd.read_csv(directory / "leaderboard.csv").set_index("algorithm")
    assert board.loc["hang", "success_rate"] == 0  # killed: no final value, not a success


def test_cells_are_committed_one_line_each_and_partial_lines_ignored(fault_plugins, tmp_path):
    directory = run_suite(make_suite(["{name: joint-em}", fault("abort"), "{name: gd}"]),
                          tmp_path)
    partial = directory / "cells.jsonl"
    lines = partial.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)[-1]["key"] for line in lines)
    with partial.open("a") as fh:  # a kill while writing leaves half a line
        fh.write(lines[0][: len(lines[0]) // 2])
    cells, good = read_cell_lines(partial)
    assert len(cells) == 3 and good < partial.stat().st_size
    (directory / "results.parquet").unlink()
    assert len(read_results(directory).query("record == 'final'")) == 3


def test_existing_results_are_never_replaced_silently(fresh_plugins, tmp_path):
    suite = make_suite(["{name: joint-em}", "{name: gd}"])
    directory = run_suite(suite, tmp_path)
    before = (directory / "cells.jsonl").read_bytes()
    with pytest.raises(ResultsExist, match="--resume.*--overwrite"):
        run_suite(suite, tmp_path)
    assert (directory / "cells.jsonl").read_bytes() == before
    assert (directory / "results.parquet").is_file()
    # resume: every cell is reused, nothing recomputed, the same table
    run_suite(suite, tmp_path, mode="resume")
    assert (directory / "cells.jsonl").read_bytes() == before
    assert read_manifest(directory)["reused_cells"] == 2
    # overwrite: computed again, identical (same seeds), one line per cell
    run_suite(suite, tmp_path, mode="overwrite")
    assert len((directory / "cells.jsonl").read_text().splitlines()) == 2
    assert read_manifest(directory)["reused_cells"] == 0


def test_resume_reruns_errors_and_changed_configurations(fault_plugins, tmp_path):
    suite = make_suite(["{name: joint-em}", fault("system-exit")])
    directory = run_suite(suite, tmp_path)
    run_suite(suite, tmp_path, mode="resume")
    lines = (directory / "cells.jsonl").read_text().splitlines()
    assert [json.loads(line)[-1]["algorithm"] for line in lines] == \
        ["joint-em", "system-exit", "system-exit"]
    assert len(finals(directory)) == 2
    changed = make_suite(["{name: joint-em}"], base=SUITE.replace("max_iter: 5", "max_iter: 4"))
    run_suite(changed, tmp_path, mode="resume")
    fin = finals(directory)
    # joint-em recomputed under the new configuration; the crashed cells of the algorithm the
    # suite no longer has stay in the folder's outputs (a resumed run never hides a cell)
    assert fin.loc["joint-em", "iteration"] == 4
    assert fin.loc["system-exit", "status"] == "error" and len(fin) == 2
    assert read_manifest(directory)["reused_cells"] == 0


def test_unwritable_output_is_a_clear_error(fresh_plugins, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(textwrap.dedent(SUITE) + "  - {name: gd}\n")
    result = CliRunner().invoke(main, ["run", str(suite_file), "--out", str(blocker)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "is a file, not a folder; choose another --out" in text and "Traceback" not in text


def test_strict_exit_code_and_existing_results_exit_code(fault_plugins, tmp_path):
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(textwrap.dedent(SUITE) + "  - {name: gd}\n  - " + fault("abort")
                          + "\n")
    out = tmp_path / "out"
    first = CliRunner().invoke(main, ["run", str(suite_file), "--out", str(out)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, ["run", str(suite_file), "--out", str(out)])
    assert again.exit_code == 1 and "--resume" in again.output
    strict = CliRunner().invoke(main, ["run", str(suite_file), "--out", str(out), "--resume",
                                       "--strict"])
    assert strict.exit_code == 3, strict.output
    assert "1 cell(s) errored, crashed" in " ".join(strict.output.split())


def test_memory_sizes():
    assert parse_size("4GiB") == 4 * 2**30 and parse_size("512MB") == 512 * 10**6
    assert parse_size(4096) == 4096
    for bad in ("lots", "-1GB", "0", True):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(SuiteError) as info:
        make_suite(["{name: gd}"], extra="memory_limit: lots\n")
    assert [(where.split(" (")[0], message) for where, message in info.value.problems] == [
        ("memory_limit", "Value error, cannot read 'lots' as a memory size; write e.g. 4096, "
                         "'512MB' or '4GiB'")]


def test_store_refuses_then_overwrites(tmp_path):
    store = ResultStore(tmp_path / "s")
    store.append([{"record": "final", "key": "a", "status": "done", "objective": "x"}])
    with pytest.raises(ResultsExist):
        ResultStore(tmp_path / "s")
    resumed = ResultStore(tmp_path / "s", "resume")
    assert resumed.reusable("a") is not None and resumed.reusable("b") is None
    assert ResultStore(tmp_path / "s", "overwrite").previous == {}


# ---------------------------------------------------------------------------------------------
# The command line as a process: SIGKILL then --resume, Ctrl-C, SIGTERM.

CLI_SUITE = """
name: kill-test
seed: 3
repetitions: 4
budget: {max_iter: 25, timeout: 60}
metrics: [param_error, train_nll, test_mse]
datasets:
  - name: synthetic-moe
    params: {n: 2000, n_test: 200, d: 5, sigma: 0.3}
    grid: {k: [2, 3]}
algorithms:
  - name: joint-em
  - name: gd
  - name: gradient-em
"""


def _moebench(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "moebench.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)


def _wait_for_cells(path: Path, count: int, proc: subprocess.Popen, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_bytes().splitlines()) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"moebench exited early ({proc.returncode}): {proc.stdout.read()}")
        time.sleep(0.05)
    pytest.fail("no cells were written in time")


def _final_table(directory: Path) -> pd.DataFrame:
    frame = read_results(directory)
    fin = frame[frame["record"] == "final"]
    cols = ["experiment", "dataset", "algorithm", "repetition", "status", "iteration",
            "param_error", "train_nll", "test_mse"]
    return fin[cols].sort_values(cols[:4]).reset_index(drop=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("uninterrupted")
    suite_file = base / "kill.yaml"
    suite_file.write_text(textwrap.dedent(CLI_SUITE))
    proc = _moebench("run", str(suite_file), "--out", str(base / "out"))
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    return suite_file, _final_table(base / "out" / "kill-test")


def test_sigkill_halfway_then_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    suite_file, expected = uninterrupted
    out = tmp_path / "out"
    directory = out / "kill-test"
    proc = _moebench("run", str(suite_file), "--out", str(out))
    _wait_for_cells(directory / "cells.jsonl", 7, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len((directory / "cells.jsonl").read_bytes().splitlines())
    assert done_before < len(expected)
    assert read_manifest(directory)["state"] == "running"  # no stale table in the folder
    assert not (directory / "results.parquet").exists()
    board = CliRunner().invoke(main, ["leaderboard", str(directory)])
    assert board.exit_code == 0 and "joint-em" in board.output
    resumed = subprocess.run([sys.executable, "-m", "moebench.cli", "run", str(suite_file),
                              "--out", str(out), "--resume"], capture_output=True, text=True,
                             timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    manifest = read_manifest(directory)
    assert manifest["state"] == "complete" and manifest["reused_cells"] >= done_before - 1
    got = _final_table(directory)
    assert not got.duplicated(["experiment", "dataset", "algorithm", "repetition"]).any()
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_outputs_and_exits_with_its_code(uninterrupted, tmp_path, signum, code):
    suite_file, expected = uninterrupted
    out = tmp_path / "out"
    directory = out / "kill-test"
    proc = _moebench("run", str(suite_file), "--out", str(out))
    _wait_for_cells(directory / "cells.jsonl", 3, proc)
    os.killpg(proc.pid, signum)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, output
    assert "--resume" in output
    manifest = read_manifest(directory)
    assert manifest["state"] == "interrupted" and manifest["interrupted"] is True
    assert (directory / "results.parquet").is_file() and (directory / "leaderboard.csv").is_file()
    got = _final_table(directory)
    assert 3 <= len(got) < len(expected)


def test_huge_grid_asks_for_yes(fresh_plugins, tmp_path):
    suite_file = tmp_path / "huge.yaml"
    suite_file.write_text(textwrap.dedent(SUITE).replace("repetitions: 1", "repetitions: 1000")
                          + "  - {name: gd, grid: {lr: [" + ", ".join(
                              str(0.001 * (i + 1)) for i in range(200)) + "]}}\n")
    result = CliRunner().invoke(main, ["run", str(suite_file), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "200000 cells" in text.replace(",", "") and "--yes" in text
    assert not (tmp_path / "o" / "exec-test").exists()


def test_an_algorithm_writing_into_its_inputs_changes_no_other_cell(fault_plugins, tmp_path):
    alone = finals(run_suite(make_suite(["{name: joint-em}"]), tmp_path / "a"))
    after = finals(run_suite(make_suite([fault("mutate"), "{name: joint-em}"]), tmp_path / "b"))
    for column in ("param_error", "train_nll", "test_mse", "iteration"):
        assert after.loc["joint-em", column] == alone.loc["joint-em", column], column


def _fault_env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_first_ctrl_c_lets_running_cells_finish_and_a_second_one_still_writes(fault_plugins,
                                                                             tmp_path):
    suite_file = tmp_path / "slow.yaml"
    suite_file.write_text(textwrap.dedent(SUITE).replace("timeout: 0.5", "timeout: 60")
                          + "".join(f"  - {{name: fault, label: b{i}, params: {{how: 'burn:2'}}}}\n"
                                    for i in range(4)))
    for presses, out in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        proc = _moebench("run", str(suite_file), "--out", str(out), env=_fault_env(fault_plugins))
        cells = out / "exec-test" / "cells.jsonl"
        _wait_for_cells(cells, 1, proc)
        time.sleep(0.3)  # the second cell is running
        os.killpg(proc.pid, signal.SIGINT)
        if presses == 2:
            time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, output
        manifest = read_manifest(out / "exec-test")
        assert manifest["state"] == "interrupted"
        assert (out / "exec-test" / "results.parquet").is_file()
        done = len(cells.read_text().splitlines())
        if presses == 1:
            assert done == 2, "the cell in flight at the first Ctrl-C was not let finish"
        else:
            assert 1 <= done <= 2


def test_small_cells_run_single_threaded_large_ones_keep_the_workers_threads():
    from moebench.execution.limits import cell_threads

    assert cell_threads((4_000, 10), 2) == 1  # suite-size regression problem
    assert cell_threads((50_000, 10), 2) == 2  # two threads pay from about 20,000 x 10
    assert cell_threads((10_000, 785), 2) == 2  # Fashion-MNIST: GEMM-bound, two threads pay
    assert cell_threads(None, 4) == 4  # streamed data: the worker's setting


def test_moebench_cores_caps_the_cores_a_run_uses(monkeypatch):
    from moebench.execution.limits import usable_cores, worker_threads

    monkeypatch.delenv("MOEBENCH_CORES", raising=False)
    all_cores = usable_cores()
    monkeypatch.setenv("MOEBENCH_CORES", "1")
    assert usable_cores() == 1 and worker_threads(1) == 1
    for ignored in ("0", "many", ""):
        monkeypatch.setenv("MOEBENCH_CORES", ignored)
        assert usable_cores() == all_cores
    monkeypatch.setenv("MOEBENCH_CORES", str(all_cores + 5))
    assert usable_cores() == all_cores  # a cap, never more than the machine gives
