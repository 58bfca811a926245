"""``memory_limit`` says what it does: a limit under which no cell can start is refused when the
run starts, naming the field and the floor; a worker that dies under the limit (a native
library that cannot allocate within it exits the process) names the limit in its cell's
message (issue 21, item 12)."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import fake_distribution

from moebench import plugins
from moebench.cli import EXIT_INVALID_SUITE, main
from moebench.errors import SuiteError
from moebench.execution.limits import MIN_MEMORY_LIMIT, memory_limit_supported
from moebench.reports.results import read_results
from moebench.runner import run_suite
from moebench.suite import parse_suite

SUITE = """\
name: memory-test
seed: 3
repetitions: 1
budget: {max_iter: 5, timeout: 5, wall_timeout: 60}
metrics: [train_nll]
datasets:
  - name: synthetic-moe
    params: {n: 300, n_test: 100, d: 3, k: 2, sigma: 0.3}
algorithms:
"""

#: Like OpenBLAS, which exits the process when it cannot map its buffer: malloc outside Python
#: that fails under RLIMIT_AS ends the worker with exit code 1 instead of a MemoryError.
NATIVE = '''
    import ctypes
    import os

    from pydantic import Field

    from moebench import Algorithm, Params, hookimpl
    from moebench.algorithm import Iterate


    class NativeBuffer(Algorithm):
        """Maps a native buffer of ``mib`` MiB, exiting the process (code 1) when it cannot."""
        name = "native-buffer"

        class Params(Params):
            mib: int = Field(description="size of the buffer")
            exit_anyway: bool = Field(False, description="exit with code 1 in any case")

        def fit(self, problem, init, callback):
            callback(Iterate(0, init, objective=1.0))
            libc = ctypes.CDLL(None)
            libc.malloc.restype = ctypes.c_void_p
            buffer = libc.malloc(ctypes.c_size_t(self.params.mib * 2**20))
            if not buffer or self.params.exit_anyway:
                os.write(2, b"native-buffer: memory allocation failed, giving up\\n")
                os._exit(1)
            libc.free(ctypes.c_void_p(buffer))
            return init


    @hookimpl
    def register_algorithms(register):
        register(NativeBuffer)
'''


def _suite(algorithms: list[str], memory_limit: str | None):
    text = SUITE + "".join(f"  - {a}\n" for a in algorithms)
    if memory_limit is not None:
        text = text.replace("algorithms:\n", f"memory_limit: {memory_limit}\nalgorithms:\n")
    return text


@pytest.mark.parametrize(("limit", "shown"), [("100MiB", "100 MiB"), ("1MB", "977 KiB")])
def test_a_limit_no_cell_can_start_under_is_refused_naming_memory_limit(tmp_path, limit, shown):
    with pytest.raises(SuiteError) as refused:
        run_suite(parse_suite(_suite(["{name: gd}"], limit)), tmp_path / "out",
                  suite_path="memory.yaml")
    assert refused.value.problems == [("memory_limit", (
        f"{shown} is below 256 MiB, the least a cell can run under: a cell adds about 128 MiB to "
        "its worker's address space just to start (torch, its data, BLAS buffers); set "
        "memory_limit to at least 256MiB"))]
    assert not (tmp_path / "out").exists()  # refused before the results folder is touched


def test_the_cli_refuses_a_tiny_limit_as_an_invalid_suite(tmp_path):
    suite = tmp_path / "memory.yaml"
    suite.write_text(_suite(["{name: gd}"], "1MB"))
    result = CliRunner().invoke(main, ["run", str(suite), "--out", str(tmp_path / "out"),
                                       "--progress", "none"])
    assert result.exit_code == EXIT_INVALID_SUITE, result.output
    assert "Traceback" not in result.output and "SystemError" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "  memory_limit: 977 KiB is below 256 MiB, the least a cell can run under: a cell adds "
        "about 128 MiB to its worker's address space just to start (torch, its data, BLAS "
        "buffers); set memory_limit to at least 256MiB")


@pytest.fixture
def native_plugin(tmp_path, monkeypatch, fresh_plugins):
    site = fake_distribution(tmp_path / "site", "mb-native", {"mb_native": NATIVE},
                             {"native": "mb_native"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    return site


def _finals(directory) -> pd.DataFrame:
    frame = read_results(directory)
    return frame[frame["record"] == "final"].set_index("algorithm")


@pytest.mark.skipif(not memory_limit_supported(), reason="RLIMIT_AS is Linux only")
def test_a_worker_dying_under_the_limit_names_it_and_the_floor_runs_a_small_cell(
        native_plugin, tmp_path):
    assert MIN_MEMORY_LIMIT == 256 * 2**20
    over = "{name: native-buffer, label: over, params: {mib: 1024}}"  # 4 x the limit
    suite = parse_suite(_suite([over, "{name: gd}", "{name: joint-em}"], "256MiB"))
    fin = _finals(run_suite(suite, tmp_path / "limited", html_report=False))
    assert fin.loc["over", "status"] == "crashed"
    assert fin.loc["over", "message"] == (
        "the worker process running this cell died: exit code 1 (under memory_limit 256 MiB "
        "(RLIMIT_AS): a native library that cannot allocate within it ends the worker; raise "
        "memory_limit if the cell needs more)")
    # the floor is enough for small cells, also after a worker died and was replaced
    assert set(fin.loc[["gd", "joint-em"], "status"]) <= {"done", "max_iter"}

    # without a limit the same buffer is no problem, and a death does not blame a limit
    died = "{name: native-buffer, label: died, params: {mib: 1024, exit_anyway: true}}"
    free = "{name: native-buffer, label: free, params: {mib: 1024}}"
    fin = _finals(run_suite(parse_suite(_suite([free, died], None)), tmp_path / "unlimited",
                            html_report=False))
    assert fin.loc["free", "status"] in {"done", "max_iter"}
    assert fin.loc["died", "message"] == "the worker process running this cell died: exit code 1"

