"""Execution: in which processes (or cluster) cells are executed, and where their results go.

:mod:`moebench.cell` knows what a cell *computes*; this package knows how cells are *executed*
so that a long suite survives faults:

- :mod:`.worker`: the function a worker process runs for one cell (it imports
  :mod:`moebench.cell` only, never the runner);
- :mod:`.local`: a pool of persistent, killable worker processes (pebble);
- :mod:`.dask`: the same cells as Dask tasks on a cluster (``distributed``);
- :mod:`.limits`: per-cell hard limits (wall clock, memory), threads and worker start-up;
- :mod:`.interrupts`: Ctrl-C / SIGTERM handling (stop scheduling, then kill);
- :mod:`.heartbeat`: what the cells in flight tell the progress display (iteration, elapsed);
- :mod:`.store`: WHERE A ROW IS WRITTEN: the append-only, fsync'ed result store with resume;
- :mod:`.manifest`: what a run records about itself in ``manifest.json``.
"""

from .limits import Limits
from .store import REUSABLE, ResultsExist, ResultStore

__all__ = ["REUSABLE", "Limits", "ResultStore", "ResultsExist"]
