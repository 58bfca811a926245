"""Heartbeats: what the cells in flight tell the supervising process while they run.

A cell's worker writes a small JSON file in ``<run folder>/.inflight/`` when the cell starts
and as the algorithm reports iterations, at most once every :data:`BEAT_INTERVAL` seconds (and
once when the first iteration arrives): the cell's coordinates, its iteration and ``max_iter``,
and when it started. The progress display reads the folder (:func:`read_heartbeats`) to show
the iteration and elapsed time of a long cell and to estimate what it has left from its
iteration rate.

The channel is a file because it survives what a worker may suffer (a kill by the hard limit,
a segfault) without any state in the pool, and works for every executor whose workers see the
run folder (the local pool, a Dask ``LocalCluster``, a cluster on a shared file system). It
carries no result: a file is written atomically (temporary file, then rename), removed by the
worker when the cell ends and by the supervisor when the cell is reported (a killed worker
cannot remove its own), and the folder is removed when the run ends. The result store never
reads it (:mod:`.store`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cell.spec import CellSpec

#: The folder of the heartbeat files, inside the run folder (hidden: not an output).
INFLIGHT_FOLDER = ".inflight"
#: At most one write per cell in this many seconds (the first iteration is always written).
BEAT_INTERVAL = 0.5


def inflight_folder(run_folder: str | Path) -> Path:
    """Where the cells of the run in ``run_folder`` write their heartbeats."""
    return Path(run_folder) / INFLIGHT_FOLDER


def heartbeat_file(folder: Path | None, spec: CellSpec) -> str | None:
    """The heartbeat file of the cell ``spec`` in ``folder`` (``None``: no heartbeats); two
    entries of a suite that differ only by their label (the same key) get two files."""
    if folder is None:
        return None
    where = json.dumps([spec.experiment.name, spec.dataset.id, spec.algorithm.id,
                        spec.repetition])
    return str(folder / f"{spec.key}-{hashlib.sha1(where.encode()).hexdigest()[:10]}.json")


@contextmanager
def heartbeat_folder(folder: Path | None) -> Iterator[Path | None]:
    """Create ``folder`` empty (files a killed run left are removed) for the run's duration,
    then remove it with whatever is left in it."""
    if folder is None:
        yield None
        return
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # the run goes on without heartbeats
        yield None
        return
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_heartbeat(path: str | None) -> None:
    """Remove a cell's heartbeat file (if any): the cell was reported."""
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


class Heartbeat:
    """The heartbeat file of one cell, written by the process running the cell.

    Parameters
    ----------
    path
        The file (:func:`heartbeat_file`); ``None`` or a path whose folder does not exist (a
        remote worker that does not see the run folder): nothing is written.
    spec
        The cell.
    wall
        The cell's hard wall-clock limit in seconds, if any.
    """

    def __init__(self, path: str | None, spec: CellSpec, wall: float | None = None) -> None:
        self.path = path if path is not None and os.path.isdir(os.path.dirname(path)) else None
        budget = spec.experiment.budget_for(spec.algorithm)
        self.state: dict[str, Any] = {
            "experiment": spec.experiment.name, "dataset": spec.dataset.id,
            "algorithm": spec.algorithm.id, "repetition": spec.repetition,
            "max_iter": budget.max_iter, "wall": wall, "started": time.time(),
            "iteration": None, "iterating_since": None, "first_iteration": None,
            "updated": None, "pid": os.getpid()}
        self._written = -math.inf
        self.beat()

    def beat(self, iteration: int | None = None) -> None:
        """The cell reported ``iteration`` (``None``: it started); writes the file unless it
        was written less than :data:`BEAT_INTERVAL` seconds ago (the first iteration is
        always written). Never raises."""
        if self.path is None:
            return
        now = time.monotonic()
        first = iteration is not None and self.state["iteration"] is None
        stamp = time.time()
        if first:
            self.state["iterating_since"], self.state["first_iteration"] = stamp, iteration
        if iteration is not None:
            self.state["iteration"] = iteration
        if not first and now - self._written < BEAT_INTERVAL:
            return
        self._written = now
        self.state["updated"] = stamp
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(self.state, fh)
            os.replace(tmp, self.path)
        except OSError:
            self.path = None  # the folder went away (the run ended): stop writing

    def close(self) -> None:
        """The cell ended: remove the file."""
        remove_heartbeat(self.path)
        self.path = None


@dataclass(frozen=True)
class InFlight:
    """A cell in flight, as its heartbeat file describes it.

    Attributes
    ----------
    experiment, dataset, algorithm, repetition
        The cell's coordinates (as its rows name them).
    started
        When the cell started (``time.time()``; data loading included).
    iteration
        The last iteration written (``None``: no report yet).
    max_iter
        The budget's ``max_iter`` (the cell stops there at the latest).
    first_iteration, iterating_since
        The first iteration written and when it was reported.
    updated
        When the file was last written.
    wall
        The cell's hard wall-clock limit in seconds (``None``: none).
    """

    experiment: str
    dataset: str
    algorithm: str
    repetition: int
    started: float
    iteration: int | None = None
    max_iter: int | None = None
    first_iteration: int | None = None
    iterating_since: float | None = None
    updated: float | None = None
    wall: float | None = None

    @property
    def plan_key(self) -> tuple[str, str, str]:
        """``(experiment, dataset, algorithm)``, as the progress display's plan names cells."""
        return (self.experiment, self.dataset, self.algorithm)

    def elapsed(self, now: float) -> float:
        """Seconds since the cell started."""
        return max(0.0, now - self.started)

    def rate(self) -> float | None:
        """Iterations per second since the first report (``None`` before two reports)."""
        if None in (self.iteration, self.first_iteration, self.iterating_since, self.updated):
            return None
        done = self.iteration - self.first_iteration
        seconds = self.updated - self.iterating_since
        return done / seconds if done > 0 and seconds > 0 else None

    def seconds_left(self, now: float) -> float | None:
        """Seconds until the cell reaches ``max_iter`` at its iteration rate (bounded by its
        hard limit); ``None`` when there is no rate yet (or no ``max_iter``)."""
        rate = self.rate()
        if rate is None or self.max_iter is None or self.iteration is None:
            return None
        left = (self.max_iter - self.iteration) / rate - (now - (self.updated or now))
        if self.wall is not None:
            left = min(left, self.wall - self.elapsed(now))
        return max(0.0, left)


def _in_flight(data: Any) -> InFlight | None:
    if not isinstance(data, dict):
        return None
    try:
        return InFlight(**{k: data.get(k) for k in InFlight.__dataclass_fields__})
    except TypeError:
        return None


def read_heartbeats(folder: Path | None) -> list[InFlight]:
    """The cells in flight in a run's heartbeat folder, longest-running first (files that
    cannot be read, being replaced or gone, are skipped)."""
    if folder is None:
        return []
    found: list[InFlight] = []
    try:
        paths = [p for p in folder.iterdir() if p.suffix == ".json"]
    except OSError:
        return []
    for path in paths:
        try:
            cell = _in_flight(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if cell is not None and isinstance(cell.started, int | float):
            found.append(cell)
    return sorted(found, key=lambda c: c.started)
