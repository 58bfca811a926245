"""``moebench compare-commits REV_A REV_B SUITE``: one suite run on two revisions, kept.

Each revision is checked out into a temporary ``git worktree`` and its suite runs there with
*that* checkout's ``moebench`` and first-party plugins: ``PYTHONPATH`` puts the worktree first,
a link makes its ``plugins/`` folder importable as ``moebench_plugins``, and a small
``.dist-info`` written from the worktree's ``pyproject.toml`` makes its own plugin entry points
the ones ``importlib.metadata`` finds (ahead of the installed copy's). Third-party packages
(torch, numpy, ...) come from the environment that runs the command: a commit that needs other
versions of them needs its own environment (asv builds one per commit for the kernel
benchmarks, ``docs/kernel-benchmarks.md``).

The two revisions run **at the same time, in rounds**: round ``j`` of ``K`` runs the
repetitions ``r`` with ``r % K == j`` (``moebench run --round j/K``) of both revisions at once,
each in its own process, and the next round starts when both are done. A seed's two cells then
run side by side, under the same machine state. CPU time is not immune to that state: the
host's clock frequency, its other tenants and a neighbour that fills the caches slow the CPU
work itself (measured on this project's 2-core VM: the same pure-Python loop 2.7 ms or 4.1 ms
of CPU time depending on whether the core had just idled; two whole runs one after the other
differed by 1.2-1.4x, runs side by side by less than the noise). Rounds put both runs back in
step after process start-up. ``sequential=True`` runs them one after the other within each
round, alternating which goes first (one core, one GPU); ``rounds=1`` runs each revision whole
(revisions older than ``--round`` need it).

Runs land in the history (:mod:`moebench.history.database`), replacing an earlier run of the
same commit with the same options on this machine; with ``reuse`` such a run is taken instead
of running the revision again (it was not run alongside the other revision: load may differ).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import MoebenchError
from ..execution.limits import CORES_ENV
from ..suite.loader import load_suite
from .database import History, HistoryEntry, machine_name


@dataclass(frozen=True)
class Revision:
    """A resolved commit."""

    rev: str
    sha: str
    time: int
    subject: str


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=60)
    except FileNotFoundError as exc:
        raise MoebenchError("git is not installed: compare-commits checks out revisions "
                            "with git worktrees") from exc
    if done.returncode != 0:
        raise MoebenchError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout}")
    return done.stdout


def resolve_revision(repo: Path, rev: str) -> Revision:
    """``rev`` (a branch, tag, ``HEAD~2``, a hash) as a commit of the repository at ``repo``."""
    try:
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except MoebenchError as exc:
        raise MoebenchError(f"{rev!r} is not a commit of the repository at {repo}: give a "
                            "branch, tag or commit hash (git log --oneline lists them)") from exc
    when, _, subject = _git(repo, "show", "-s", "--format=%ct%x00%s", sha).strip().partition(
        "\0")
    return Revision(rev, sha, int(when), subject)


def repository_root(start: Path) -> Path:
    """The top folder of the git checkout holding ``start``."""
    try:
        return Path(_git(start, "rev-parse", "--show-toplevel").strip())
    except MoebenchError as exc:
        raise MoebenchError(f"{start} is not inside a git checkout of moebench: run "
                            "compare-commits from one") from exc


def _dist_info(tree: Path, into: Path) -> None:
    """A ``.dist-info`` declaring the worktree's own entry points (from its pyproject)."""
    project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
    info = into / f"{project['name']}-{project.get('version', '0')}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project.get('version', '0')}\n")
    groups = project.get("entry-points", {})
    text = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n"
                   for group, points in groups.items())
    (info / "entry_points.txt").write_text(text)


@contextmanager
def checked_out(repo: Path, revision: Revision, scratch: Path) -> Iterator[tuple[Path, str]]:
    """Check ``revision`` out into a temporary worktree; yields the tree and the
    ``PYTHONPATH`` that imports its moebench and plugins first. Removed on exit."""
    tree = scratch / f"tree-{revision.sha[:12]}"
    shim = scratch / f"path-{revision.sha[:12]}"
    _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), revision.sha)
    try:
        shim.mkdir()
        if (tree / "plugins").is_dir():
            (shim / "moebench_plugins").symlink_to(tree / "plugins", target_is_directory=True)
        _dist_info(tree, shim)
        path = os.pathsep.join([str(tree), str(shim), *filter(None, [
            os.environ.get("PYTHONPATH")])])
        yield tree, path
    finally:
        _git(repo, "worktree", "remove", "--force", str(tree))


def _suite_in(tree: Path, repo: Path, suite: str) -> Path:
    path = Path(suite)
    if path.is_absolute() and not path.is_relative_to(repo):
        return path
    inside = tree / (path.relative_to(repo) if path.is_absolute() else path)
    if not inside.is_file():
        raise MoebenchError(f"{suite} does not exist in the revision checked out at {tree}: "
                            "give a suite file that both revisions have (or an absolute path "
                            "outside the repository, used for both)")
    return inside


def _cores_each(ways: int) -> int:
    """The cores each of ``ways`` runs side by side may use (at least one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // ways)


def _start(tree: Path, path: str, suite: Path, out: Path, options: list[str],
           log: Path, cores: int | None = None) -> subprocess.Popen:
    """Start one ``moebench run`` of a revision in its worktree, appending to ``log``; with
    ``cores``, its workers use at most that many torch threads (``$MOEBENCH_CORES``). Runs
    are not pinned to cores: beside other load, the one pinned next to a busy process would
    be the slower one, where unpinned runs share the load alike."""
    env = {**os.environ, "PYTHONPATH": path}
    if cores is not None:
        env[CORES_ENV] = str(cores)
    command = [sys.executable, "-m", "moebench.cli", "run", str(suite), "--out", str(out),
               "--no-report", "--progress", "lines", *options]
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        return subprocess.Popen(command, cwd=tree, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)


def _wait(process: subprocess.Popen, revision: Revision, log: Path) -> None:
    """Wait for a run; a failed one raises with the end of its log."""
    code = process.wait()
    if code in (0, 3):
        return
    text = log.read_text(errors="replace")
    if "No such option" in text and "--round" in text:
        raise MoebenchError(f"{revision.rev} ({revision.sha[:8]}) predates `moebench run "
                            "--round`: compare it with --rounds 1 (one whole run per revision)")
    tail = "\n".join(text.splitlines()[-15:])
    raise MoebenchError(f"the suite run of {revision.rev} ({revision.sha[:8]}) exited with "
                        f"{code}; its log is {log}:\n{tail}")


#: The suffix of the folder a revision's run goes to until it has succeeded.
PARTIAL_SUFFIX = ".partial"


def run_revisions(revisions: list[Revision], suite: str, options: list[str], *,
                  history: History, machine: str | None = None, repo: Path,
                  reuse: bool = False, rounds: int = 3, sequential: bool = False,
                  say: Callable[[str], object] = print) -> list[HistoryEntry]:
    """Run ``suite`` with ``options`` on each revision into the history, in ``rounds``
    alternating rounds (see the module docstring); with ``reuse``, a revision whose complete
    run is already in the history is not run again. Returns the entries in order."""
    machine = machine_name(machine)
    if len({r.sha for r in revisions}) < len(revisions):
        raise MoebenchError(
            f"{' and '.join(r.rev for r in revisions)} are the same commit "
            f"({revisions[0].sha[:8]}): nothing to compare; to see the noise of identical "
            "code, compare two commits that differ only in a comment")
    suite_name = _suite_name(repo, suite)
    entries: dict[str, HistoryEntry] = {}
    todo = []
    for revision in revisions:
        found = None if not reuse else history.find(machine, revision.sha, suite_name, options)
        if found is not None:
            say(f"{revision.rev} ({revision.sha[:8]}): kept from the history, {found.directory}")
            entries[revision.sha] = found
        else:
            todo.append(revision)
    if todo:
        entries.update(_run_all(todo, suite, options, history, machine, repo, rounds,
                                sequential, say))
    return [entries[r.sha] for r in revisions]


def _suite_name(repo: Path, suite: str) -> str:
    path = Path(suite) if Path(suite).is_absolute() else repo / suite
    return load_suite(path).name


def _run_round(order: list[Revision], places: dict[str, tuple[Path, str, Path, Path]],
               options: list[str], sequential: bool) -> None:
    """One round: every revision's run, at the same time unless ``sequential`` (then each
    with its share of the cores' threads, so that together they do not outnumber the cores)."""
    started: list[tuple[Revision, subprocess.Popen, Path]] = []
    cores = None if sequential else _cores_each(len(order))
    try:
        for revision in order:
            tree, path, suite_file, out = places[revision.sha]
            log = out / "run.log"
            started.append((revision, _start(tree, path, suite_file, out, options, log, cores),
                            log))
            if sequential:
                _wait(started[-1][1], revision, log)
        for revision, process, log in started:
            _wait(process, revision, log)
    except BaseException:
        for _, process, _ in started:
            if process.poll() is None:
                process.terminate()
                process.wait()
        raise


def _run_all(todo: list[Revision], suite: str, options: list[str], history: History,
             machine: str, repo: Path, rounds: int, sequential: bool,
             say: Callable[[str], object]) -> dict[str, HistoryEntry]:
    outs = {}
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="moebench-")))
        places = {}
        for revision in todo:
            tree, path = stack.enter_context(checked_out(repo, revision, scratch))
            final = history.parent_for(machine, revision.sha, options)
            # runs go to a side folder and replace an earlier run only once they succeeded
            out = final.with_name(final.name + PARTIAL_SUFFIX)
            if out.exists():
                shutil.rmtree(out)  # a run that failed or was interrupted before
            out.mkdir(parents=True)
            places[revision.sha] = (tree, path, _suite_in(tree, repo, suite), out)
            outs[revision.sha] = (out, final)
            say(f"{revision.rev}: {revision.sha[:8]} {revision.subject} (log while it runs: "
                f"{out / 'run.log'}, then in {final})")
        for j in range(rounds):
            extra = [] if rounds == 1 else ["--round", f"{j}/{rounds}"] + (
                ["--resume"] if j else [])
            order = todo if j % 2 == 0 else todo[::-1]
            say(f"round {j + 1}/{rounds}: " + (" then " if sequential else " and ").join(
                r.rev for r in order))
            _run_round(order, places, [*options, *extra], sequential)
    entries = {}
    for revision in todo:
        out, final = outs[revision.sha]
        folders = [p for p in out.iterdir() if (p / "manifest.json").is_file()]
        if len(folders) != 1:
            raise MoebenchError(f"the run of {revision.rev} wrote no results folder in {out}")
        if final.exists():
            shutil.rmtree(final)  # an earlier run of this commit with these options: replaced
        out.rename(final)
        entries[revision.sha] = history.record(
            final / folders[0].name, machine=machine, commit=revision.sha,
            commit_time=revision.time, subject=revision.subject, options=options)
    return entries
