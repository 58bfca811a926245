"""compare-commits on a loaded machine: a planted slowdown is caught, a clean rerun is not.

A throw-away git repository holds a copy of this checkout plus an algorithm plugin that does a
fixed amount of pure-Python CPU work per iteration, in three commits: the base, a commit that
changes a comment only, and a commit that doubles the work. ``moebench compare-commits`` runs
them in worktrees, in a pipe, while another process keeps a core busy; then ``moebench
history`` draws the three commits and the page renders in headless Chromium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from moebench.history import History
from moebench.testing.browser import check_report, missing_reason

ROOT = Path(__file__).resolve().parents[2]

PLANTED = '''
    """An algorithm with a known CPU cost per iteration (the planted slowdown of the tests)."""

    from moebench import Algorithm, hookimpl
    from moebench.algorithm import Iterate

    WORK = {work}  # {comment}


    class Planted(Algorithm):
        """Gate-shrinking steps, each with WORK units of single-threaded CPU work."""

        name = "planted"
        summary = "WORK units of CPU work per iteration"

        def fit(self, problem, init, callback):
            params, t = dict(init), 0
            while callback(Iterate(t, params)):
                total = 0
                for i in range(WORK * 60_000):
                    total += i * i
                params = {{k: v * 0.9 if k == "W" else v for k, v in params.items()}}
                t += 1
            return params


    @hookimpl
    def register_algorithms(register):
        register(Planted)
'''

SUITE = """
    name: planted
    seed: 3
    repetitions: 6
    budget: {max_iter: 8}
    metrics: [param_error, train_nll]
    datasets:
      - name: synthetic-moe
        params: {n: 300, n_test: 50, d: 3, k: 2, sigma: 0.3}
    algorithms:
      - name: planted
      - name: joint-em
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _commit(repo: Path, work: int, comment: str, message: str, day: int) -> str:
    module = repo / "plugins" / "algorithms" / "planted.py"
    module.write_text(textwrap.dedent(PLANTED.format(work=work, comment=comment)))
    _git(repo, "add", "-A")
    when = f"2026-12-0{day}T12:00:00+00:00"  # one commit a day: the history orders by date
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "-m", message], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when})
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repository with this checkout's code and three commits of the planted plugin."""
    repo = tmp_path_factory.mktemp("repo")
    for name in ("moebench", "plugins"):
        shutil.copytree(ROOT / name, repo / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    text = (ROOT / "pyproject.toml").read_text()
    anchor = "[project.entry-points.moebench]\n"
    assert anchor in text
    (repo / "pyproject.toml").write_text(text.replace(
        anchor, anchor + 'planted = "moebench_plugins.algorithms.planted"\n'))
    (repo / "suites").mkdir()
    (repo / "suites" / "planted.yaml").write_text(textwrap.dedent(SUITE))
    _git(repo, "init", "-q")
    shas = [_commit(repo, 1, "base", "planted: one unit of work", 1),
            _commit(repo, 1, "a comment changed", "a comment <b>only</b>", 2),
            _commit(repo, 2, "twice the work", "planted: twice the work", 3)]
    return repo, shas


def _compare_commits(repo: Path, history: Path, a: str, b: str) -> subprocess.CompletedProcess:
    """``moebench compare-commits A B SUITE --fail-on-regression | cat`` in ``repo``, next to a
    process that keeps a core busy."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        return subprocess.run(
            [sys.executable, "-m", "moebench.cli", "compare-commits", a, b,
             "suites/planted.yaml", "--history", str(history), "--machine", "ci-box",
             "--rounds", "2", "--fail-on-regression"],
            cwd=repo, capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONPATH": ""})
    finally:
        busy.kill()
        busy.wait()


@pytest.fixture(scope="module")
def compared(repo, tmp_path_factory):
    repo, shas = repo
    history = tmp_path_factory.mktemp("history")
    clean = _compare_commits(repo, history, shas[0], shas[1])
    slow = _compare_commits(repo, history, shas[1], shas[2])
    return history, shas, clean, slow


def test_a_clean_rerun_exits_zero(compared):
    _, _, clean, _ = compared
    print(clean.stdout)  # pytest -s shows the piped output
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "worse: 0," in clean.stdout
    assert not [x for x in clean.stdout.splitlines() if x.startswith("+")], clean.stdout


def test_twice_the_cpu_work_exits_nonzero_and_names_it_on_one_line(compared):
    _, _, _, slow = compared
    print(slow.stdout)
    assert slow.returncode == 1, slow.stdout + slow.stderr
    (line,) = [x for x in slow.stdout.splitlines() if x.startswith("+")]
    assert line.endswith("planted / synthetic-moe / planted") and " time " in line, line
    assert float(line.split()[3]) > 1.6, line  # twice the work (load can stretch it further)
    assert "regression: planted / synthetic-moe / planted: time" in slow.stdout
    # joint-em is the same code in both commits: not a regression
    assert not [x for x in slow.stdout.splitlines() if x.startswith("+") and "joint-em" in x]
    # the rounds alternate and every run is logged (stderr: progress, not results)
    assert "round 2/2" in slow.stderr


def test_the_runs_are_kept_per_commit_and_machine(compared):
    history, shas, _, _ = compared
    entries = History(history).entries()
    assert [e.commit for e in entries] == shas  # the middle commit ran twice, kept once
    assert {e.machine for e in entries} == {"ci-box"}
    assert all(e.suite == "planted" and e.variant == "default" for e in entries)
    assert entries[1].subject == "a comment <b>only</b>"
    for entry in entries:
        assert (entry.directory / "results.parquet").is_file()


def test_history_over_three_commits_renders_in_chromium(compared, tmp_path):
    history, shas, _, _ = compared
    page = tmp_path / "history.html"
    done = subprocess.run([sys.executable, "-m", "moebench.cli", "history", "--history",
                           str(history), "--out", str(page)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    html = page.read_text()
    assert all(sha[:8] in html for sha in shas)
    assert "a comment <b>only</b>" not in html  # escaped
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    result = check_report(page)
    assert result.problems == [], result.problems
    assert result.plots == 3 and result.empty_plots == []  # time, param_error, train_nll


def test_a_failed_run_keeps_the_earlier_runs_of_the_history(compared, repo):
    history, shas, _, _ = compared
    repo, _ = repo
    before = {e.commit: e.directory for e in History(history).entries()}
    done = subprocess.run(
        [sys.executable, "-m", "moebench.cli", "compare-commits", shas[0], shas[2],
         "suites/planted.yaml", "--history", str(history), "--machine", "ci-box", "--",
         "--seeds", "0"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "exited with 2" in done.stderr and "run.log" in done.stderr
    after = {e.commit: e.directory for e in History(history).entries()}
    assert after == before and all((d / "results.parquet").is_file() for d in after.values())
    assert _git(repo, "worktree", "list").count("\n") == 0  # only the main checkout


def test_the_same_commit_twice_is_refused(repo, tmp_path):
    repo, shas = repo
    done = subprocess.run(
        [sys.executable, "-m", "moebench.cli", "compare-commits", "HEAD", shas[2],
         "suites/planted.yaml", "--history", str(tmp_path)], cwd=repo, capture_output=True,
        text=True, timeout=120)
    assert done.returncode == 2
    assert "are the same commit" in done.stderr and "differ only in a comment" in done.stderr
