"""``moebench history``: the history folder drawn as one offline HTML page (like ``asv
publish``): every measure of every suite over commits, per machine and run options.

The page itself is :mod:`moebench.reports.timeline`; this module reads the history's entries
into it, skipping (with a warning that says how to fix it) an entry whose results cannot be
read.
"""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path

from ..errors import MoebenchError
from ..reports.measures import Clock
from ..reports.results import RunResults
from ..reports.timeline import TimelineRun, write_timeline
from .database import HISTORY_ENV, DamagedEntry, History, HistoryEntry


def _load(entry: HistoryEntry, clock: Clock) -> TimelineRun | None:
    """The entry as a :class:`TimelineRun`, or ``None`` (with a warning) when it is damaged."""
    try:
        run = TimelineRun(entry.commit, entry.commit_time, entry.subject, entry.machine,
                          entry.suite, entry.variant, list(entry.options),
                          RunResults.load(entry.directory))
        run.stats(clock)  # a table that loads but lacks its columns fails here, not later
    except (MoebenchError, OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(
            f"history entry {entry.directory} (commit {entry.short} of suite {entry.suite!r} "
            f"on {entry.machine}) cannot be read ({type(exc).__name__}: {exc}): left out of the "
            "page; delete that folder, or run that commit again (`moebench compare-commits`) "
            "to replace it", DamagedEntry, stacklevel=3)
        return None
    return run


def _command(history: History, out: Path, machine: str | None, suite: str | None,
             clock: Clock) -> str:
    """The command line that writes this page again."""
    argv = ["moebench", "history", "--history", str(history.root), "--out", str(out)]
    for flag, value in (("--machine", machine), ("--suite", suite)):
        if value is not None:
            argv += [flag, value]
    if clock != "cpu":
        argv += ["--clock", clock]
    return shlex.join(argv)


def publish(history: History, out: str | Path, *, machine: str | None = None,
            suite: str | None = None, clock: Clock = "cpu") -> Path:
    """Write the history page: every measure over commits, one series per machine, suite and
    run options.

    Parameters
    ----------
    history
        The history folder.
    out
        The HTML file to write (a folder: ``history.html`` in it).
    machine, suite
        Draw only this machine's, or this suite's, results.
    clock
        The clock of the time measure: ``"cpu"`` (process CPU time) or ``"wall"``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    MoebenchError
        When the history holds no (readable) results for this selection.
    """
    entries = history.entries(machine, suite)
    selection = "".join([f" of machine {machine!r}" if machine else "",
                         f" of suite {suite!r}" if suite else ""])
    if not entries:
        raise MoebenchError(
            f"no results{selection} in the history at {history.root}: run `moebench "
            "compare-commits A B SUITE` first (it keeps each commit's results there), or "
            f"point --history (or ${HISTORY_ENV}) at the folder that holds them"
            + ("; or leave out --machine/--suite" if selection else ""))
    runs = [r for r in (_load(e, clock) for e in entries) if r is not None]
    if not runs:
        raise MoebenchError(f"none of the {len(entries)} results folder(s){selection} in the "
                            f"history at {history.root} can be read (see the warnings above)")
    suites = ", ".join(dict.fromkeys(r.suite for r in runs))
    machines = {m: history.machine_facts(m) for m in dict.fromkeys(r.machine for r in runs)}
    path = Path(out)
    return write_timeline(runs, path, clock=clock, title=f"moebench history: {suites}",
                          machines=machines,
                          command=_command(history, path, machine, suite, clock))
