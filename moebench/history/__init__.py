"""Results kept per commit and machine, and runs of past commits.

- ``database``: the history folder (``.moebench/history/`` by default): one ordinary results
  folder per (machine, suite, run options, commit), each with an ``entry.json`` saying which
  commit and machine produced it;
- ``commits``: ``moebench compare-commits``: a suite run on two revisions, each checked out in a
  temporary git worktree, kept in the history, then compared;
- ``publish``: ``moebench history``: the history drawn as one offline HTML page, every measure
  over commits (the page itself: :mod:`moebench.reports.timeline`).
"""

from .database import (
    DEFAULT_ROOT,
    HISTORY_ENV,
    DamagedEntry,
    History,
    HistoryEntry,
    machine_name,
)
from .publish import publish

__all__ = ["DEFAULT_ROOT", "HISTORY_ENV", "DamagedEntry", "History", "HistoryEntry", "machine_name",
           "publish"]
