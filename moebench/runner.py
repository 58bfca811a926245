"""The runner: a suite run from start to finish.

:func:`run_suite` resolves the suite once, lists its cells, keeps those a resumed folder already
holds, hands the others to an executor (:mod:`moebench.execution`: killable local workers or
Dask), writes every finished cell to the result store as it is reported, and at the end writes
the table, the leaderboards and the reports (:mod:`moebench.reports`) from one loaded copy of
the results: those of the whole folder, earlier runs' cells that this run did not select
included (see :meth:`moebench.execution.store.ResultStore.folder_cells`). What one cell computes
is :mod:`moebench.cell`'s business. A run holds the results folder's lock from before it touches
the folder to the end (:mod:`moebench.execution.lock`): a second run into it stops at once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from . import plugins
from .cell.spec import CellSpec, expand_cells
from .errors import MoebenchError
from .execution.dask import DaskExecutor, reachable_scheduler
from .execution.heartbeat import inflight_folder
from .execution.interrupts import StopRequest
from .execution.limits import Limits, check_memory_limit, default_wall, worker_threads
from .execution.local import LocalExecutor
from .execution.lock import FolderLock
from .execution.manifest import (
    describe_experiment,
    finish_manifest,
    manifest_base,
    merge_recorded,
    metric_directions,
    run_entry,
)
from .execution.store import Mode, ResultStore
from .reports.outputs import finish_outputs
from .suite import ResolvedExperiment, Suite, resolve

Executor = Literal["local", "dask"]


class Interrupted(MoebenchError):
    """The run was stopped by Ctrl-C or SIGTERM; its finished cells and tables are written."""

    def __init__(self, directory: Path, signum: int):
        self.directory, self.signum = directory, signum
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}; finished cells are kept in {directory} "
                         "(run again with --resume to complete the suite)")


def _cell_limits(spec: CellSpec, wall: float | None, memory: int | None) -> Limits:
    budget = spec.experiment.budget_for(spec.algorithm)
    if wall is None:
        wall = budget.wall_timeout if budget.wall_timeout is not None \
            else default_wall(budget.timeout)
    return Limits(wall=wall, memory=memory)


def _executor(kind: Executor, jobs: int, threads: int, scheduler: str | None,
              folder: Path) -> LocalExecutor | DaskExecutor:
    """The executor of a run into ``folder``; its cells write their heartbeats there (read
    by the progress display)."""
    beats = inflight_folder(folder)
    if kind == "dask":
        return DaskExecutor(jobs=jobs, threads=threads, scheduler=scheduler, heartbeats=beats)
    return LocalExecutor(jobs=jobs, threads=threads, heartbeats=beats)


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    jobs: int = 1,
    quick: bool = False,
    seeds: int | None = None,
    suite_path: str | None = None,
    progress: Callable[[int, int], Any] | None = None,
    mode: Mode = "new",
    executor: Executor = "local",
    scheduler: str | None = None,
    wall_timeout: float | None = None,
    max_cells: int | None = None,
    html_report: bool = True,
    on_cell: Callable[[dict[str, Any]], Any] | None = None,
    experiments: list[ResolvedExperiment] | None = None,
    repetition_round: tuple[int, int] | None = None,
) -> Path:
    """Run a parsed suite and write results into ``<out>/<suite name>/``.

    Parameters
    ----------
    suite
        The suite (already parsed); it is resolved against the plugins first, unless
        ``experiments`` gives it resolved.
    out
        Parent folder of the results folder.
    jobs
        Worker processes (every cell runs in a worker, also with ``jobs=1``).
    quick
        Apply the suite's ``quick`` overrides (fewer seeds, smaller problems).
    seeds
        Number of repetitions of every experiment, overriding the suite.
    suite_path
        The suite file, for messages and the manifest.
    progress
        Called with ``(cells_done, cells_total)`` after each cell.
    mode
        ``"new"`` refuses a folder that holds results; ``"resume"`` keeps its finished cells
        (``done``/``max_iter``/``timeout``/``skipped`` with the same key) and runs the rest;
        ``"overwrite"`` discards them. A resumed folder's outputs describe every cell it
        holds, earlier runs' cells outside this selection too (a cell this run computes
        replaces one at the same experiment, dataset, algorithm and repetition).
    executor, scheduler
        ``"local"`` (worker processes) or ``"dask"`` (a ``LocalCluster`` or ``scheduler``).
    wall_timeout
        Hard wall-clock limit per cell in seconds, overriding the suite's.
    max_cells
        Refuse grids with more cells than this (``None``: no limit).
    html_report
        Write ``report.html`` at the end (``moebench run --no-report``: no).
    on_cell
        Called with the final row of each cell reported (finished or kept), before progress.
    experiments
        The suite already resolved (:func:`moebench.suite.resolve` with the same ``quick``,
        ``seeds`` and ``max_cells``), so that a caller that resolved it does not do it twice.
    repetition_round
        ``(j, K)``: only the repetitions ``r`` with ``r % K == j`` (``--round j/K``).

    Returns
    -------
    Path
        The results folder.

    Raises
    ------
    SuiteError
        The suite is invalid. Nothing is written.
    ResultsExist
        ``mode="new"`` and the folder holds results.
    Interrupted
        Ctrl-C or SIGTERM, after the finished cells, tables and manifest are written.
    """
    if experiments is None:
        experiments = resolve(suite, suite_path or "<suite>", quick=quick, seeds=seeds,
                              max_cells=max_cells)
    scheduler = reachable_scheduler(scheduler) if executor == "dask" and scheduler else None
    with SuiteRun(suite, experiments, Path(out), jobs=jobs, mode=mode, suite_path=suite_path,
                  quick=quick, executor=executor, on_cell=on_cell, progress=progress,
                  repetition_round=repetition_round) as run:
        run.store.write_manifest(run.manifest)
        todo = run.cells_to_run(wall_timeout)
        stop = StopRequest()
        state = "interrupted"
        try:
            with stop.installed():
                pool = _executor(executor, jobs, run.threads, scheduler, run.store.directory)
                pool.run(todo, run.report, stop)
            if not stop.requested:
                state = "complete"
        finally:
            # a further Ctrl-C must not cost the outputs; after SIGTERM or a second Ctrl-C the
            # slow reports are left out (table, leaderboards, manifest written)
            with stop.installed():
                run.finish(state, html_report=html_report and not stop.forced,
                           slow_reports=not stop.forced)
        if stop.requested:
            raise Interrupted(run.store.directory, stop.signum or signal.SIGINT)
        return run.store.directory


class SuiteRun:
    """The state of one suite run in the supervising process: the store, the manifest, the
    cells counted so far. Built by :func:`run_suite`."""

    def __init__(self, suite: Suite, experiments: list[ResolvedExperiment], out: Path, *,
                 jobs: int, mode: Mode, suite_path: str | None, quick: bool, executor: Executor,
                 on_cell: Callable[[dict[str, Any]], Any] | None,
                 progress: Callable[[int, int], Any] | None,
                 repetition_round: tuple[int, int] | None = None) -> None:
        device = plugins.get("devices", suite.device)()
        if not device.is_available():
            raise MoebenchError(device.unavailable_reason())
        check_memory_limit(suite.memory_limit_bytes(), suite_path or "<suite>")  # before the lock
        self.suite, self.experiments, self.mode = suite, experiments, mode
        self.on_cell, self.progress = on_cell, progress
        self.round = repetition_round
        self.total = sum(len(e.datasets) * len(e.algorithms) * len(self._repetitions(e))
                         for e in experiments)
        # the folder's lock before the store reads or cleans the folder; released by __exit__
        self.lock = FolderLock(out / suite.name).acquire()
        try:
            self.store = ResultStore(out / suite.name, mode)
        except BaseException:
            self.lock.release()
            raise
        self.memory = suite.memory_limit_bytes()
        self.threads = worker_threads(jobs)
        # a resumed folder's outputs describe its earlier cells too: what the earlier manifest
        # recorded about them is carried over (before this run's manifest replaces it)
        recorded = self.store.recorded_manifest() if mode == "resume" else {}
        directions = recorded.get("metric_directions")
        self.manifest = manifest_base(suite, suite_path, device)
        self.manifest.update(
            started=datetime.now(UTC).isoformat(), state="running", jobs=jobs, quick=quick,
            executor=executor, cells=self.total, resumed=mode == "resume",
            worker_threads=self.threads, memory_limit=self.memory,
            rank_by={e.name: e.rank_by for e in experiments},
            metrics={e.name: e.metrics for e in experiments},
            metric_directions=metric_directions(
                experiments, directions if isinstance(directions, dict) else None),
            experiments=[describe_experiment(e) for e in experiments])
        if repetition_round is not None:
            self.manifest["round"] = "{}/{}".format(*repetition_round)
        self.manifest["runs"] = [run_entry(self.manifest)]
        merge_recorded(self.manifest, recorded)
        self.done = 0

    def __enter__(self) -> SuiteRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def _repetitions(self, experiment: ResolvedExperiment) -> range:
        """The repetitions of ``experiment`` this run computes (all, or this round's)."""
        if self.round is None:
            return range(experiment.repetitions)
        j, k = self.round
        return range(j, experiment.repetitions, k)

    def cells_to_run(self, wall_timeout: float | None) -> list[tuple[CellSpec, Limits]]:
        """Every cell of the suite that must run, with its limits; the cells a resumed folder
        holds are reported at once instead."""
        todo: list[tuple[CellSpec, Limits]] = []
        reused = 0
        suite = self.suite
        for spec in expand_cells(suite.name, suite.seed, self.experiments, suite.device,
                                 suite.dtype):
            if self.round is not None and spec.repetition % self.round[1] != self.round[0]:
                continue
            kept = self.store.reusable(spec.key) if self.mode == "resume" else None
            if kept is not None:
                self.report(kept, new=False)
                reused += 1
            else:
                todo.append((spec, _cell_limits(spec, wall_timeout, self.memory)))
        self.manifest["reused_cells"] = reused
        return todo

    def report(self, rows: list[dict[str, Any]], new: bool = True) -> None:
        """A finished cell's rows: on disk first, then counted and shown."""
        if new:
            self.store.append(rows)
        else:
            self.store.keep(rows)
        self.done += 1
        if self.on_cell is not None:
            self.on_cell(rows[-1])
        if self.progress is not None:
            self.progress(self.done, self.total)

    def finish(self, state: str, html_report: bool = True, slow_reports: bool = True) -> None:
        """Write the manifest, table, leaderboards and reports; one failing never costs the
        others (the manifest says ``outputs: failed`` and lists them in ``output_errors``;
        a complete run then raises :class:`~moebench.reports.outputs.OutputsFailed`)."""
        finish_manifest(self.manifest, self.store, state)
        self.store.write_manifest(self.manifest)
        if not self.manifest.get("cells_in_folder"):
            return
        # the folder's experiments, earlier runs' included
        with_reproduction = slow_reports and any(e.get("reference") or e.get("figures")
                                                 for e in self.manifest["experiments"])
        finish_outputs(self.store, self.manifest, complete=state == "complete",
                       reproduction=with_reproduction, html=html_report)
