"""The runner: what a cell computes, and a suite run from start to finish.

A *cell* is (experiment, dataset variant, algorithm variant, repetition). Cells sharing a
dataset variant and repetition form a *unit*: the data is generated or loaded and the
initialisation drawn from the unit's seeds, so every algorithm sees the same data and starts from
the same point, whichever worker runs it. How cells are executed (killable worker processes,
hard limits, the result store, resume, Dask) is :mod:`moebench.execution`'s business.
"""

from __future__ import annotations

import json
import math
import operator
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from . import __version__, plugins
from .algorithm import Iterate, Problem
from .clock import AlgorithmClock, default_clock
from .dataset import Data, check_fit_possible
from .device import DTYPES, Device
from .errors import DataUnavailable, MoebenchError, UnsupportedProblem
from .execution.cells import CellSpec, cell_fields, expand_cells
from .execution.interrupts import StopRequest
from .execution.limits import Limits, default_wall, worker_threads
from .execution.outcomes import as_scalar, is_out_of_memory, out_of_memory_message
from .execution.store import ResultStore
from .leaderboard import write_leaderboards
from .metric import EvalContext, Metric
from .model import Model, ParamDict
from .seeding import torch_generator
from .suite import ResolvedExperiment, Suite, resolve


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def build_model(data: Data, choice, device: Device, dtype: torch.dtype) -> Model:
    """The model family a dataset proposes, with the suite's overrides applied."""
    name = (choice.name if choice and choice.name else None) or data.model.name
    params = {**data.model.params, **(choice.params if choice else {})}
    cls = plugins.get("models", name)
    n_classes = data.meta.get("n_classes") if data.task == "classification" else None
    return cls(
        cls.Params.model_validate(params),
        n_features=data.n_features,
        n_classes=n_classes,
        device=device.torch_device(),
        dtype=dtype,
    )


_WARM: set[str] = set()  # devices warmed up in this process

#: A run whose objective (a loss: lower is better) exceeds its initial value by this factor of
#: ``max(1, |initial|)`` is stopped as ``diverged`` (an unstable step size, typically).
BLOW_UP = 1e6


@dataclass
class PreparedUnit:
    """A unit's data, model and initial point on its device, shared by its cells."""

    device: Device
    data: Data
    model: Model
    tensors: dict[str, torch.Tensor]
    truth: ParamDict | None
    init: ParamDict
    metrics: list[Metric]


@dataclass(frozen=True)
class UnitFailure:
    """Why a unit could not be prepared: every cell of it gets this status and message."""

    status: str
    message: str
    cause: str | None = None


def prepare_unit(spec: CellSpec) -> PreparedUnit | UnitFailure:
    """Load (or generate) the data of ``spec``'s unit and draw its initial point.

    Missing data or an unsupported problem give a ``skipped`` failure; any other exception an
    ``error`` naming the dataset. Out-of-memory errors propagate (the caller records the cell
    as ``crashed``).
    """
    exp, ds = spec.experiment, spec.dataset
    fields = cell_fields(spec)
    try:
        device: Device = plugins.get("devices", spec.device)()
        dtype = DTYPES[spec.dtype] if spec.dtype else device.default_dtype
        if spec.device not in _WARM:
            device.warm_up()
            _WARM.add(spec.device)
        metrics: list[Metric] = [plugins.get("metrics", m)() for m in exp.metrics]
        dataset_cls = plugins.get("datasets", ds.name)
        data = dataset_cls(dataset_cls.Params.model_validate(ds.params)).load(fields["data_seed"])
        model = build_model(data, ds.model, device, dtype)
        check_fit_possible(data, model.n_experts)
        tensors = {
            name: device.tensor(getattr(data, name), dtype)
            for name in ("X_train", "y_train", "X_test", "y_test")
        }
        truth = _truth_for(model, data)
        init = model.init_params(exp.init, torch_generator(fields["init_seed"], "cpu"), truth)
        init = {k: v.to(device.torch_device()) for k, v in init.items()}
    except DataUnavailable as exc:
        return UnitFailure("skipped", str(exc), cause="data-unavailable")
    except UnsupportedProblem as exc:
        return UnitFailure("skipped", str(exc))
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        return UnitFailure("error", f"dataset {ds.id!r} failed: {_describe(exc)}")
    return PreparedUnit(device, data, model, tensors, truth, init, metrics)


def _truth_for(model: Model, data: Data) -> ParamDict | None:
    """The ground truth when it is expressed in ``model``'s layout, else ``None``.

    A suite may fit another family (or another ``k``) than the one that generated the data;
    then there is no truth to compare with.
    """
    if data.truth is None:
        return None
    shapes = model.shapes()
    if set(data.truth) != set(shapes) or any(
        tuple(np.shape(data.truth[k])) != tuple(shapes[k]) for k in shapes
    ):
        return None
    return model.as_tensors(data.truth)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ReportError(TypeError):
    """An algorithm reported something the runner cannot record (e.g. a string objective)."""


def _report_float(value: Any, what: str) -> float | None:
    """A reported scalar as a Python float: 0-d tensors and numpy scalars are unwrapped."""
    if value is None:
        return None
    if getattr(value, "ndim", 0):  # a tensor or array with dimensions, even of one element
        raise ReportError(f"{what} must be a Python float (or None); the algorithm reported a "
                          f"{type(value).__name__} of shape {tuple(value.shape)}")
    scalar = as_scalar(value)
    if isinstance(scalar, bool) or not isinstance(scalar, int | float):
        raise ReportError(f"{what} must be a Python float (or None); the algorithm reported "
                          f"{type(value).__name__} {str(value)[:60]!r}")
    return float(scalar)


def _iteration_number(value: Any) -> int | None:
    """``Iterate.iteration`` as an int (numpy integers included), or ``None`` if it is none."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _returned_problem(params: Any, model: Model) -> str | None:
    """Why what ``fit`` returned cannot be the final parameters, or ``None`` if it can."""
    shapes = model.shapes()
    if not isinstance(params, dict):
        return (f"fit must return the final parameters (a dict of tensors {sorted(shapes)}); it "
                f"returned {type(params).__name__}")
    missing = sorted(set(shapes) - set(params))
    if missing:
        return f"fit returned parameters without {', '.join(missing)} (the model has " \
               f"{sorted(shapes)})"
    for name, shape in shapes.items():
        value = params[name]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return f"fit returned parameter {name!r} as {got}; the model needs shape {shape}"
    return None


class _StopIgnored(BaseException):
    """Raised in the callback of an algorithm that reports again after being told to stop
    (a ``BaseException``, so that a plugin's ``except Exception`` does not swallow it)."""


def run_cell(spec: CellSpec, unit: PreparedUnit, memory: int | None = None,
             deadline: float | None = None) -> list[dict[str, Any]]:
    """Run the algorithm of ``spec`` on a prepared unit; returns the cell's rows.

    Every iteration the algorithm reports becomes an ``iteration`` row (the clock stops while
    metrics are computed); a ``final`` row carries the status, the message and the metrics of
    the returned parameters. Exceptions of the plugin, ``SystemExit`` and ``KeyboardInterrupt``
    included, become the cell's ``error`` (``crashed`` when out of memory).
    """
    exp, alg = spec.experiment, spec.algorithm
    budget = exp.budget_for(alg)  # the algorithm entry's own budget, else the experiment's
    device, model, tensors, truth = unit.device, unit.model, unit.tensors, unit.truth
    fields = {**cell_fields(spec), "model": model.name,
              "model_params": _json(model.params.model_dump())}
    meta, density = unit.data.meta, unit.data.input_density

    def final(values: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {**fields, "record": "final", **values, "iteration": extra.pop("iteration", 0),
                "time": extra.pop("time", 0.0), **extra}

    try:
        cls = plugins.get("algorithms", alg.name)
        algorithm = cls(cls.Params.model_validate(alg.params))
        reason = algorithm.unsupported_reason(model)
    except Exception as exc:
        return [final({}, status="error", message=_describe(exc))]
    if reason:
        return [final({}, status="skipped", message=reason)]

    def evaluate(params: ParamDict) -> dict[str, float]:
        ctx = EvalContext(model, params, tensors["X_train"], tensors["y_train"],
                          tensors["X_test"], tensors["y_test"], truth, meta)
        return {m.name: _report_float(m(ctx), f"metric {m.name!r}") for m in unit.metrics}

    probe = EvalContext(model, unit.init, tensors["X_train"], tensors["y_train"],
                        tensors["X_test"], tensors["y_test"], truth, meta)
    checked = [m.name for m in unit.metrics if m.applies_to(probe)]
    rows: list[dict[str, Any]] = []
    state: dict[str, Any] = {"status": None, "last": None, "message": None,
                             "ignored": 0, "next": 0, "metrics_time": 0.0}
    clock = AlgorithmClock()
    clock_name = budget.clock or default_clock(device.torch_device().type)

    def timed_evaluate(params: ParamDict) -> dict[str, float]:
        t = time.perf_counter()
        try:
            return evaluate(params)
        finally:
            state["metrics_time"] += time.perf_counter() - t

    def callback(it: Iterate) -> bool:
        if state["status"] is not None:  # told to stop already: neither timed nor recorded
            state["ignored"] += 1
            raise _StopIgnored
        go_on = report(it)
        if not go_on:  # kept in case the algorithm ignores the stop and must be aborted
            state["last_params"] = {k: v.detach().clone() for k, v in it.params.items()}
        return go_on

    def report(it: Iterate) -> bool:
        if _iteration_number(it.iteration) != state["next"]:
            raise ReportError(f"Iterate.iteration must count 0, 1, 2, ... (one per report; "
                              f"restarts keep counting): expected {state['next']}, the "
                              f"algorithm reported {it.iteration!r}")
        state["next"] += 1
        device.synchronize()
        clock.stop()
        objective = _report_float(it.objective, "Iterate.objective")
        extras = {f"extra.{k}": _report_float(v, f"Iterate.extras[{k!r}]")
                  for k, v in it.extras.items()}
        state["last_extras"] = extras  # the final row carries the last report's extras too
        values = timed_evaluate(it.params)
        rows.append({**fields, "record": "iteration", "iteration": int(it.iteration),
                     "time": clock.wall, "cpu_time": clock.cpu, "objective": objective,
                     **values, **extras})
        state["last"] = (int(it.iteration), values)
        bad = [n for n in checked if not math.isfinite(values[n])]
        if objective is not None and not math.isfinite(objective):
            bad.insert(0, "objective")
        if bad:
            state["status"] = "diverged"
            state["message"] = f"non-finite {', '.join(bad)} at iteration {it.iteration}"
            return False
        if objective is not None:
            start = state.setdefault("objective0", objective)
            if objective > start + BLOW_UP * max(1.0, abs(start)):
                state["status"] = "diverged"
                state["message"] = (f"objective blew up: {objective:.3g} at iteration "
                                    f"{it.iteration}, from {start:.3g} at iteration 0")
                return False
        if it.iteration >= budget.max_iter:
            state["status"] = "max_iter"
            return False
        if deadline is not None and time.monotonic() >= deadline:
            state["status"] = "timeout"
            state["message"] = (f"stopped near the hard wall-clock limit at iteration "
                                f"{it.iteration} ({clock.spent(clock_name):.3g} s of "
                                f"{clock_name} time)")
            return False
        if budget.timeout is not None and clock.spent(clock_name) >= budget.timeout:
            state["status"] = "timeout"
            state["message"] = (f"stopped after {clock.spent(clock_name):.3g} s of {clock_name} "
                                f"time (budget {budget.timeout} s) at iteration {it.iteration}")
            return False
        device.synchronize()
        clock.start()
        return True

    # the algorithm gets its own copies: one that writes into its inputs must not change the
    # data of the cells that follow on this worker
    problem = Problem(model, tensors["X_train"].clone(), tensors["y_train"].clone(),
                      torch_generator(fields["seed"], device.torch_device()), density,
                      init_spec=exp.init, init_truth=truth)
    start = {k: v.clone() for k, v in unit.init.items()}
    device.synchronize()
    clock.start()
    final_params = None
    try:
        final_params = algorithm.fit(problem, start, callback)
        device.synchronize()
        if state["status"] is None:
            clock.stop()
            if budget.timeout is not None and clock.spent(clock_name) > budget.timeout:
                state["status"] = "timeout"
                state["message"] = (f"the algorithm returned after {clock.spent(clock_name):.3g}"
                                    f" s of {clock_name} time without reporting in time "
                                    f"(budget {budget.timeout} s)")
            else:
                state["status"] = "done"
    except _StopIgnored:
        final_params = state["last_params"]
    except UnsupportedProblem as exc:
        state["status"], state["message"] = "skipped", str(exc)
    except ReportError as exc:
        state["status"], state["message"] = "error", str(exc)
    except BaseException as exc:  # a plugin's SystemExit or KeyboardInterrupt ends its cell only
        if is_out_of_memory(exc):
            state["status"], state["message"] = "crashed", out_of_memory_message(exc, memory)
        else:
            state["status"] = "error"
            state["message"] = f"{_describe(exc)}\n{traceback.format_exc(limit=6)}"

    status = state["status"]
    values: dict[str, Any] = {}
    if status in ("done", "max_iter", "timeout"):
        problem_text = _returned_problem(final_params, model)
        if problem_text is not None:
            status, state["message"] = "error", problem_text
            final_params = None
    if status in ("done", "max_iter", "timeout") and final_params is not None:
        try:
            values = timed_evaluate(final_params)
        except Exception as exc:
            status, state["message"] = "error", f"evaluating metrics failed: {_describe(exc)}"
        if status == "done" and any(not math.isfinite(values[n]) for n in checked):
            status, state["message"] = "diverged", "non-finite metric at the final parameters"
    elif state["last"] is not None:
        values = state["last"][1]
    if state["ignored"]:
        note = ("the algorithm reported another iteration after the runner said stop; it was "
                "stopped by an exception raised in its callback (final metrics: the last "
                "reported parameters)")
        state["message"] = f"{state['message']}; {note}" if state["message"] else note
    absent = [] if unit.data.has_test else [m.name for m in unit.metrics if m.reads_test_split()]
    if absent:
        note = (f"no test split (the dataset trains on every row): {', '.join(absent)} absent")
        state["message"] = f"{state['message']}; {note}" if state["message"] else note
    for note in getattr(algorithm, "notes", None) or []:  # Algorithm.note(): e.g. a phase
        state["message"] = f"{state['message']}; {note}" if state["message"] else str(note)
    for row in rows:
        row["status"] = status
    last_iter = state["last"][0] if state["last"] else 0
    rows.append(final(values, status=status, message=state["message"], iteration=last_iter,
                      time=clock.wall, cpu_time=clock.cpu, clock=clock_name,
                      time_metrics=state["metrics_time"], time_compile=clock.compile,
                      **state.get("last_extras", {})))
    return rows


# --------------------------------------------------------------------------------------------
# A suite run.


def _git_commit() -> str | None:
    """The commit of the moebench source tree that runs (``-dirty`` with local changes);
    ``None`` for an installed copy outside a git checkout."""
    source = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except Exception:
        return None


def manifest_base(suite: Suite, suite_path: str | None, device: Device) -> dict[str, Any]:
    infos = plugins.plugin_infos()
    return {
        "suite": suite.name,
        "suite_file": suite_path,
        "suite_seed": suite.seed,
        "moebench": __version__,
        "plugins": {p.name: {"distribution": p.distribution, "version": p.version,
                             "status": p.status, "error": p.error} for p in infos},
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "pandas": dist_version("pandas"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device.name,
        "device_description": device.describe(),
        "dtype": suite.dtype or str(device.default_dtype).removeprefix("torch."),
        "git_commit": _git_commit(),
        "command": sys.argv,
    }


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


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    jobs: int = 1,
    quick: bool = False,
    seeds: int | None = None,
    suite_path: str | None = None,
    progress: Any = None,
    mode: Literal["new", "resume", "overwrite"] = "new",
    executor: Literal["local", "dask"] = "local",
    scheduler: str | None = None,
    wall_timeout: float | None = None,
    max_cells: int | None = None,
    html_report: bool = True,
    on_cell: Any = None,
) -> Path:
    """Run a parsed suite and write results into ``<out>/<suite name>/``.

    Parameters
    ----------
    suite
        The suite (already parsed); it is resolved against the plugins first.
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
        ``"overwrite"`` discards them.
    executor, scheduler
        ``"local"`` (a pool of worker processes) or ``"dask"`` (``distributed``; a
        ``LocalCluster`` unless ``scheduler`` gives an address).
    wall_timeout
        Hard wall-clock limit per cell in seconds, overriding the suite's.
    max_cells
        Refuse grids with more cells than this (``None``: no limit).
    html_report
        Write the interactive ``report.html`` at the end (``moebench run --no-report``: no).
    on_cell
        Called with the final row of each cell as it is reported (finished or kept by
        ``--resume``), before ``progress``: the command line's progress display uses it.

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
        Ctrl-C or SIGTERM: the finished cells, the table, the leaderboards and a manifest
        marked ``interrupted`` are written first.
    """
    experiments = resolve(suite, suite_path or "<suite>", quick=quick, seeds=seeds,
                          max_cells=max_cells)
    device_cls = plugins.get("devices", suite.device)
    device = device_cls()
    if not device.is_available():
        raise MoebenchError(device.unavailable_reason())
    total = sum(len(e.datasets) * len(e.algorithms) * e.repetitions for e in experiments)
    store = ResultStore(Path(out) / suite.name, mode)
    memory = suite.memory_limit_bytes()
    threads = worker_threads(jobs)
    manifest = manifest_base(suite, suite_path, device)
    manifest.update(started=datetime.now(UTC).isoformat(), state="running", jobs=jobs,
                    quick=quick, cells=total, executor=executor, resumed=mode == "resume",
                    worker_threads=threads, memory_limit=memory,
                    rank_by={e.name: e.rank_by for e in experiments},
                    metrics={e.name: e.metrics for e in experiments},
                    experiments=[_describe_experiment(e) for e in experiments])
    store.write_manifest(manifest)
    done = 0

    def report(rows: list[dict[str, Any]], new: bool = True) -> None:
        nonlocal done
        if new:
            store.append(rows)
        else:
            store.keep(rows)
        done += 1
        if on_cell is not None:
            on_cell(rows[-1])
        if progress is not None:
            progress(done, total)

    todo: list[tuple[CellSpec, Limits]] = []
    reused = 0
    for spec in expand_cells(suite.name, suite.seed, experiments, suite.device, suite.dtype):
        kept = store.reusable(spec.key) if mode == "resume" else None
        if kept is not None:
            report(kept, new=False)
            reused += 1
        else:
            todo.append((spec, _cell_limits(spec, wall_timeout, memory)))
    manifest["reused_cells"] = reused

    stop = StopRequest()
    state = "interrupted"
    try:
        with stop.installed():
            if executor == "dask":
                from .execution.dask import DaskExecutor

                runner = DaskExecutor(jobs=jobs, threads=threads, scheduler=scheduler)
            else:
                from .execution.local import LocalExecutor

                runner = LocalExecutor(jobs=jobs, threads=threads)
            runner.run(todo, report, stop)
        if not stop.requested:
            state = "complete"
    finally:
        # a further Ctrl-C while the outputs are written must not cost them; after SIGTERM or
        # a second Ctrl-C the slow reports are left out (table, leaderboards, manifest written)
        with stop.installed():
            _finish(store, manifest, experiments, state, html_report and not stop.forced,
                    slow_reports=not stop.forced)
    if stop.requested:
        raise Interrupted(store.directory, stop.signum or signal.SIGINT)
    return store.directory


def _finish(store: ResultStore, manifest: dict[str, Any],
            experiments: list[ResolvedExperiment], state: str,
            html_report: bool = True, slow_reports: bool = True) -> None:
    """Write the manifest, table, leaderboards and report; one failing never costs the others."""
    manifest["finished"] = datetime.now(UTC).isoformat()
    manifest["time_accounting"] = time_accounting(store, manifest)
    manifest["state"] = state
    manifest["interrupted"] = state != "complete"
    finals = store.finals()
    manifest["status_counts"] = {
        s: sum(r["status"] == s for r in finals) for s in sorted({r["status"] for r in finals})
    }
    problems: list[str] = []
    store.write_manifest(manifest)
    if not store.cells:
        return
    steps = [("results.parquet", store.write_table),
             ("leaderboards", lambda: write_leaderboards(store.directory))]
    if slow_reports and any(e.reference or e.figures for e in experiments):
        from .report import write_report

        steps.append(("REPRODUCTION.md", lambda: write_report(store.directory)))
    from .summary import write_failures

    steps.append(("failures.md", lambda: write_failures(store.directory)))
    if html_report:
        from .html_report import write_html_report

        steps.append(("report.html", lambda: write_html_report(store.directory)))
    for name, step in steps:
        try:
            step()
        except Exception as exc:
            problems.append(f"{name}: {_describe(exc)}")
    if problems:
        manifest["output_errors"] = problems
        store.write_manifest(manifest)


#: Columns of a cell's final row summed by :func:`time_accounting`, and their names there.
ACCOUNTED = {"time": "algorithm_wall", "cpu_time": "algorithm_cpu", "time_metrics": "metrics",
             "time_data": "data", "time_compile": "compilation",
             "time_worker_start": "worker_start"}


def time_accounting(store: ResultStore, manifest: dict[str, Any]) -> dict[str, float]:
    """Where a run's time went, in seconds, over the cells it computed (reused cells excluded).

    ``algorithm_wall`` / ``algorithm_cpu``: the algorithm clocks (compilation excluded);
    ``metrics``: evaluating the metrics at every reported iteration; ``data``: loading or
    generating data and drawing initial points; ``compilation``: ``torch.compile``;
    ``worker_start``: starting the worker processes (interpreter, imports, plugins), summed over
    workers; ``wall``: the run from start to end. The parts are summed over cells that may run
    in parallel, so with ``--jobs`` > 1 they can add up to more than ``wall``.
    """
    totals = {name: 0.0 for name in ACCOUNTED.values()}
    for identity in store.added:
        final = store.cells[identity][-1]
        for column, name in ACCOUNTED.items():
            value = final.get(column)
            if isinstance(value, int | float) and math.isfinite(value):
                totals[name] += float(value)
    started = datetime.fromisoformat(manifest["started"])
    totals["wall"] = (datetime.now(UTC) - started).total_seconds()
    return {k: round(v, 4) for k, v in totals.items()}


def _describe_experiment(exp: ResolvedExperiment) -> dict[str, Any]:
    """What the report needs to know about an experiment, stored in the manifest."""
    return {
        "name": exp.name,
        "description": exp.description,
        "repetitions": exp.repetitions,
        "budget": exp.budget.model_dump(),
        "init": exp.init.model_dump(),
        "metrics": exp.metrics,
        "rank_by": exp.rank_by,
        "datasets": {v.id: {"name": v.name, "params": v.params} for v in exp.datasets},
        "algorithms": {v.id: {"name": v.name, "params": v.params,
                              **({"budget": v.budget.model_dump()} if v.budget else {})}
                       for v in exp.algorithms},
        "reference": exp.reference.model_dump() if exp.reference else None,
        "figures": [f.model_dump() for f in exp.figures],
    }
