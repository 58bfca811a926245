"""Execution: where and how cells run, and where their results go.

The runner (:mod:`moebench.runner`) knows what a cell *computes*; this package knows how cells
are *executed* so that a long suite survives faults:

- :mod:`.cells`: the picklable description of one cell and its stable key;
- :mod:`.limits`: per-cell hard limits (wall clock, memory) and worker start-up;
- :mod:`.worker`: the function a worker process runs for one cell;
- :mod:`.outcomes`: rows for cells that never reported (killed, crashed) and row validation;
- :mod:`.store`: the append-only, fsync'ed result store with resume;
- :mod:`.interrupts`: Ctrl-C / SIGTERM handling (stop scheduling, then kill);
- :mod:`.local`: a pool of persistent, killable worker processes (pebble);
- :mod:`.dask`: the same cells as Dask tasks on a cluster (``distributed``).
"""

__all__ = ["REUSABLE", "CellSpec", "Limits", "ResultStore", "ResultsExist", "cell_key"]

_WHERE = {"CellSpec": "cells", "cell_key": "cells", "Limits": "limits", "REUSABLE": "store",
          "ResultStore": "store", "ResultsExist": "store"}


def __getattr__(name: str):
    # lazy, so that moebench.suite can use .limits without importing the cells (a cycle)
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)
