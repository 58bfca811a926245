"""The results folder under damage and contention (issue 21): a damaged table or manifest,
two runs into one folder, links in the folder, a disk that fills while the outputs are
written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import fake_distribution

from moebench import plugins
from moebench.cli import main
from moebench.errors import MoebenchError
from moebench.execution import store as store_module
from moebench.execution.lock import LOCK_FILE, FolderInUse, FolderLock
from moebench.execution.store import ResultStore
from moebench.reports import outputs
from moebench.reports.results import ResultsRebuilt
from moebench.runner import run_suite
from moebench.suite import parse_suite

ROOT = Path(__file__).resolve().parents[2]

NAP = '''
    import time

    from pydantic import Field

    from moebench import Algorithm, Params, hookimpl
    from moebench.algorithm import Iterate


    class Nap(Algorithm):
        """Reports once, then sleeps: a cell that takes a while."""
        name = "nap"

        class Params(Params):
            seconds: float = Field(60.0, description="how long to sleep")

        def fit(self, problem, init, callback):
            callback(Iterate(0, init, objective=1.0))
            time.sleep(self.params.seconds)
            return init


    @hookimpl
    def register_algorithms(register):
        register(Nap)
'''

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


# -- item 7: two runs into one folder ---------------------------------------------------------

@pytest.fixture
def nap_plugin(tmp_path, monkeypatch, fresh_plugins) -> Path:
    """A fake installed distribution with the ``nap`` algorithm (here and in subprocesses)."""
    site = fake_distribution(tmp_path / "site", "mb-nap", {"mb_nap": NAP}, {"nap": "mb_nap"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    return site


def _wait_for(condition, proc: subprocess.Popen, what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"moebench exited early ({proc.returncode}): {proc.stdout.read()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_a_second_run_into_a_locked_folder_stops_naming_the_holder(nap_plugin, tmp_path):
    suite_file = tmp_path / "nap.yaml"
    suite_file.write_text(textwrap.dedent(SUITE).replace("  - name: joint-em\n", "")
                          + "  - {name: nap, params: {seconds: 120}}\n")
    out, folder = tmp_path / "out", tmp_path / "out" / "folder-test"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(nap_plugin), str(ROOT)])}
    first = subprocess.Popen([sys.executable, "-m", "moebench.cli", "run", str(suite_file),
                              "--out", str(out), "--progress", "none", "--no-report"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, env=env)
    try:
        cells = folder / "cells.jsonl"
        _wait_for(lambda: cells.is_file() and cells.read_text().count("\n") >= 1, first,
                  "the first cell")  # gd is done, nap sleeps
        lines = cells.read_bytes()
        second = CliRunner().invoke(main, ["run", str(suite_file), "--out", str(out),
                                           "--resume", "--progress", "none"])
        assert second.exit_code == 1, second.output
        line = _one_line(second.output)
        assert line.startswith(f"error: {folder} is in use by another moebench run (pid "
                               f"{first.pid} on ")
        assert "moebench.cli run" in line or "cli.py run" in line
        assert cells.read_bytes() == lines  # the second run touched nothing
        # reading the folder while a run holds it needs no lock
        board = CliRunner().invoke(main, ["leaderboard", str(folder)])
        assert board.exit_code == 0 and "gd" in board.output
        with pytest.raises(FolderInUse, match=f"pid {first.pid}"):
            FolderLock(folder).acquire()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == first.pid  # stale file
    with FolderLock(folder) as lock:  # the OS released the dead run's lock
        assert lock.held
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (folder / LOCK_FILE).exists()


def test_a_finished_run_leaves_the_folder_unlocked(finished):
    assert not (finished / LOCK_FILE).exists()
    with FolderLock(finished) as lock:
        assert lock.held


# -- item 10: links in the results folder ------------------------------------------------------

def test_a_run_refuses_a_linked_cells_jsonl_before_anything_runs(tmp_path):
    victim = tmp_path / "notes.txt"
    victim.write_text("my notes\nline two\n")
    folder = tmp_path / "out" / "folder-test"
    folder.mkdir(parents=True)
    (folder / "cells.jsonl").symlink_to(victim)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(textwrap.dedent(SUITE))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning about the lines of the linked file
        result = CliRunner().invoke(main, ["run", str(suite_file), "--out", str(tmp_path / "out"),
                                           "--progress", "lines"])
    assert result.exit_code == 1, result.output
    line = _one_line(result.output)  # not even 'folder-test: started'
    assert line == (f"error: {folder / 'cells.jsonl'} is a symbolic link (to {victim}): moebench "
                    "does not write through links in a results folder; remove the link or "
                    "choose another --out")
    assert victim.read_text() == "my notes\nline two\n"
    assert sorted(p.name for p in folder.iterdir()) == ["cells.jsonl"]  # nothing written


@pytest.mark.parametrize("name", ["cells.jsonl", "manifest.json", "results.parquet",
                                  "leaderboard.md", "report.html", "figures", ".inflight"])
@pytest.mark.parametrize("mode", ["new", "resume", "overwrite"])
def test_the_store_refuses_every_link_it_would_write_through(tmp_path, name, mode):
    target = tmp_path / "elsewhere"
    target.mkdir()
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / name).symlink_to(target)
    with pytest.raises(MoebenchError, match=f"{name} is a symbolic link .*remove the link"):
        ResultStore(folder, mode)
    assert (folder / name).is_symlink() and target.is_dir()


def test_a_linked_lock_file_is_refused(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / LOCK_FILE).symlink_to(tmp_path / "other")
    with pytest.raises(MoebenchError, match=r"\.lock is a symbolic link"):
        FolderLock(folder).acquire()
    assert not (tmp_path / "other").exists()


def test_a_linked_results_folder_is_fine(finished, tmp_path):
    real = Path(shutil.copytree(finished, tmp_path / "real"))
    link = tmp_path / "linked"
    link.symlink_to(real, target_is_directory=True)
    with FolderLock(link) as lock:
        assert lock.held
        assert len(ResultStore(link, "resume").previous) == 2


# -- item 13: the disk fills while the outputs are written ------------------------------------

def _full_disk(monkeypatch, folder: Path, manifest_fails: bool = False) -> None:
    """The disk fills while report.html is written: the writer leaves a partial temporary
    file and fails with ENOSPC, and nothing else fits until that file is gone (with
    ``manifest_fails``: the manifest never fits again)."""
    leftover = folder / ".report.html.tmp"

    def write_html(run, *args, **kwargs):
        leftover.write_text("<html>" + "x" * 10_000)
        raise OSError(errno.ENOSPC, "No space left on device")

    atomic_write = store_module._atomic_write

    def full(path, write):
        if leftover.exists() or (manifest_fails and path.name == "manifest.json"
                                 and json.loads((folder / "manifest.json").read_text())
                                 .get("outputs") == "writing"):
            raise OSError(errno.ENOSPC, "No space left on device")
        atomic_write(path, write)

    monkeypatch.setattr(outputs, "write_html", write_html)
    monkeypatch.setattr(store_module, "_atomic_write", full)


def _resume(folder: Path, tmp_path: Path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(textwrap.dedent(SUITE))
    return CliRunner().invoke(main, ["run", str(suite_file), "--out", str(folder.parent),
                                     "--resume", "--progress", "none"])


def test_a_full_disk_leaves_no_temporary_file_and_the_manifest_says_so(folder, tmp_path,
                                                                       monkeypatch):
    cells = (folder / "cells.jsonl").read_bytes()
    _full_disk(monkeypatch, folder)
    result = _resume(folder, tmp_path)
    assert result.exit_code == 1, result.output
    line = _one_line(result.output)
    assert line == (f"error: the finished cells are kept in {folder}, but outputs could not be "
                    "written: report.html: OSError: [Errno 28] No space left on device; fix "
                    "that (a full disk: free space), then run the suite again with --resume to "
                    "write them (no cell is computed again)")
    assert not list(folder.glob(".*tmp")) and not (folder / "report.html").exists()
    assert (folder / "cells.jsonl").read_bytes() == cells
    assert (folder / "results.parquet").is_file() and (folder / "leaderboard.md").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["state"] == "complete"  # every cell ran ...
    assert manifest["outputs"] == "failed"  # ... but not every output was written
    assert manifest["output_errors"] == ["report.html: OSError: [Errno 28] No space left on "
                                         "device"]


def test_a_manifest_that_no_longer_fits_still_says_the_outputs_were_being_written(
        folder, tmp_path, monkeypatch):
    _full_disk(monkeypatch, folder, manifest_fails=True)
    result = _resume(folder, tmp_path)
    assert result.exit_code == 1, result.output
    line = _one_line(result.output)
    assert "report.html: OSError: [Errno 28]" in line
    assert "manifest.json: OSError: [Errno 28]" in line
    assert not list(folder.glob(".*tmp"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["outputs"] == "writing"


def test_written_outputs_are_recorded(finished):
    manifest = json.loads((finished / "manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["outputs"] == "written"
    assert "output_errors" not in manifest
