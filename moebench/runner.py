"""The runner: expands a suite into cells, runs them, and records tidy results.

A *cell* is (experiment, dataset variant, algorithm variant, repetition). Cells sharing a
dataset variant and repetition form a *unit*: the data is loaded and the initialisation drawn
once, so every algorithm sees the same data and starts from the same point. Units run in
parallel with ``jobs > 1`` (one process each); each cell's seed is derived from its coordinates,
so the results do not depend on the order or the number of workers.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, plugins
from .algorithm import Iterate, Problem
from .dataset import Data
from .device import DTYPES, Device
from .errors import DataUnavailable, MoebenchError, UnsupportedProblem
from .leaderboard import write_leaderboards
from .metric import EvalContext, Metric
from .model import Model, ParamDict
from .results import ResultsStore
from .seeding import derive_seed, torch_generator
from .suite import ResolvedExperiment, Suite, Variant, resolve


@dataclass(frozen=True)
class Unit:
    """One dataset instance and the algorithms to run on it."""

    suite: str
    suite_seed: int
    experiment: ResolvedExperiment
    dataset: Variant
    repetition: int
    device: str
    dtype: str | None


def expand_units(suite: Suite, experiments: list[ResolvedExperiment]) -> list[Unit]:
    """Every (experiment, dataset variant, repetition), in a fixed order."""
    return [
        Unit(suite.name, suite.seed, exp, ds, rep, suite.device, suite.dtype)
        for exp in experiments
        for ds in exp.datasets
        for rep in range(exp.repetitions)
    ]


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


def run_unit(unit: Unit, on_cell: Callable[[list[dict[str, Any]]], None] | None = None):
    """Run every algorithm of ``unit``; returns one list of rows per cell."""
    exp, ds = unit.experiment, unit.dataset
    device: Device = plugins.get("devices", unit.device)()
    dtype = DTYPES[unit.dtype] if unit.dtype else device.default_dtype
    data_seed = derive_seed(unit.suite_seed, exp.name, ds.id, unit.repetition, "data")
    init_seed = derive_seed(unit.suite_seed, exp.name, ds.id, unit.repetition, "init")
    base = {
        "suite": unit.suite,
        "experiment": exp.name,
        "dataset": ds.id,
        "dataset_name": ds.name,
        "dataset_params": _json(ds.params),
        "repetition": unit.repetition,
        "data_seed": data_seed,
        "init_seed": init_seed,
    }
    if unit.device not in _WARM:
        device.warm_up()
        _WARM.add(unit.device)
    metrics: list[Metric] = [plugins.get("metrics", m)() for m in exp.metrics]
    cells: list[list[dict[str, Any]]] = []

    def finish(rows: list[dict[str, Any]]) -> None:
        cells.append(rows)
        if on_cell is not None:
            on_cell(rows)

    def fail_all(status: str, message: str) -> None:
        for alg in exp.algorithms:
            finish([_final_row(base, alg, unit, {}, status=status, message=message)])

    try:
        dataset_cls = plugins.get("datasets", ds.name)
        data = dataset_cls(dataset_cls.Params.model_validate(ds.params)).load(data_seed)
        model = build_model(data, ds.model, device, dtype)
        tensors = {
            name: device.tensor(getattr(data, name), dtype)
            for name in ("X_train", "y_train", "X_test", "y_test")
        }
        truth = _truth_for(model, data)
        init = model.init_params(exp.init, torch_generator(init_seed, "cpu"), truth)
        init = {k: v.to(device.torch_device()) for k, v in init.items()}
    except (DataUnavailable, UnsupportedProblem) as exc:
        fail_all("skipped", str(exc))
        return cells
    except Exception as exc:
        fail_all("error", f"dataset {ds.id!r} failed: {_describe(exc)}")
        return cells
    base["model"] = model.name
    base["model_params"] = _json(model.params.model_dump())

    for alg in exp.algorithms:
        finish(_run_cell(unit, base, alg, model, data, tensors, truth, init, metrics, device))
    return cells


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


def _final_row(base, alg: Variant, unit: Unit, values: dict[str, Any], **fields) -> dict:
    seed = derive_seed(unit.suite_seed, unit.experiment.name, unit.dataset.id, alg.id,
                       unit.repetition)
    return {
        **base,
        "record": "final",
        "algorithm": alg.id,
        "algorithm_name": alg.name,
        "algorithm_params": _json(alg.params),
        "seed": seed,
        "iteration": fields.pop("iteration", 0),
        "time": fields.pop("time", 0.0),
        **values,
        **fields,
    }


def _run_cell(
    unit: Unit,
    base: dict[str, Any],
    alg: Variant,
    model: Model,
    data: Data,
    tensors: dict[str, torch.Tensor],
    truth: ParamDict | None,
    init: ParamDict,
    metrics: list[Metric],
    device: Device,
) -> list[dict[str, Any]]:
    budget = unit.experiment.budget
    meta, density = data.meta, data.input_density
    seed = derive_seed(unit.suite_seed, unit.experiment.name, unit.dataset.id, alg.id,
                       unit.repetition)
    try:
        cls = plugins.get("algorithms", alg.name)
        algorithm = cls(cls.Params.model_validate(alg.params))
        reason = algorithm.unsupported_reason(model)
    except Exception as exc:
        return [_final_row(base, alg, unit, {}, status="error", message=_describe(exc))]
    if reason:
        return [_final_row(base, alg, unit, {}, status="skipped", message=reason)]

    def evaluate(params: ParamDict) -> dict[str, float]:
        ctx = EvalContext(model, params, tensors["X_train"], tensors["y_train"],
                          tensors["X_test"], tensors["y_test"], truth, meta)
        return {m.name: m(ctx) for m in metrics}

    probe = EvalContext(model, init, tensors["X_train"], tensors["y_train"],
                        tensors["X_test"], tensors["y_test"], truth, meta)
    checked = [m.name for m in metrics if m.applies_to(probe)]
    rows: list[dict[str, Any]] = []
    state: dict[str, Any] = {"elapsed": 0.0, "status": None, "last": None, "message": None}

    def callback(it: Iterate) -> bool:
        device.synchronize()
        state["elapsed"] += time.perf_counter() - state["t0"]
        values = evaluate(it.params)
        row = {
            **base,
            "record": "iteration",
            "algorithm": alg.id,
            "algorithm_name": alg.name,
            "algorithm_params": _json(alg.params),
            "seed": seed,
            "iteration": it.iteration,
            "time": state["elapsed"],
            "objective": it.objective,
            **values,
            **{f"extra.{k}": float(v) for k, v in it.extras.items()},
        }
        rows.append(row)
        state["last"] = (it.iteration, values)
        bad = [n for n in checked if not math.isfinite(values[n])]
        if it.objective is not None and not math.isfinite(it.objective):
            bad.insert(0, "objective")
        if bad:
            state["status"] = "diverged"
            state["message"] = f"non-finite {', '.join(bad)} at iteration {it.iteration}"
            return False
        if it.objective is not None:
            start = state.setdefault("objective0", it.objective)
            if it.objective > start + BLOW_UP * max(1.0, abs(start)):
                state["status"] = "diverged"
                state["message"] = (f"objective blew up: {it.objective:.3g} at iteration "
                                    f"{it.iteration}, from {start:.3g} at iteration 0")
                return False
        if it.iteration >= budget.max_iter:
            state["status"] = "max_iter"
            return False
        if budget.timeout is not None and state["elapsed"] >= budget.timeout:
            state["status"] = "timeout"
            state["message"] = f"stopped after {state['elapsed']:.3g} s (budget {budget.timeout} s)"
            return False
        device.synchronize()
        state["t0"] = time.perf_counter()
        return True

    problem = Problem(model, tensors["X_train"], tensors["y_train"],
                      torch_generator(seed, device.torch_device()), density)
    start = {k: v.clone() for k, v in init.items()}
    device.synchronize()
    state["t0"] = time.perf_counter()
    final_params = None
    try:
        final_params = algorithm.fit(problem, start, callback)
        device.synchronize()
        if state["status"] is None:
            state["elapsed"] += time.perf_counter() - state["t0"]
            state["status"] = "done"
    except UnsupportedProblem as exc:
        state["status"], state["message"] = "skipped", str(exc)
    except Exception as exc:
        state["status"] = "error"
        state["message"] = f"{_describe(exc)}\n{traceback.format_exc(limit=6)}"

    status = state["status"]
    values: dict[str, Any] = {}
    if status in ("done", "max_iter", "timeout") and final_params is not None:
        try:
            values = evaluate(final_params)
        except Exception as exc:
            status, state["message"] = "error", f"evaluating metrics failed: {_describe(exc)}"
        if status == "done" and any(not math.isfinite(values[n]) for n in checked):
            status, state["message"] = "diverged", "non-finite metric at the final parameters"
    elif state["last"] is not None:
        values = state["last"][1]
    for row in rows:
        row["status"] = status
    last_iter = state["last"][0] if state["last"] else 0
    rows.append(_final_row(base, alg, unit, values, status=status, message=state["message"],
                           iteration=last_iter, time=state["elapsed"]))
    return rows


# --------------------------------------------------------------------------------------------


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


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


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    jobs: int = 1,
    quick: bool = False,
    seeds: int | None = None,
    suite_path: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Run a parsed suite and write results into ``<out>/<suite name>/``.

    Parameters
    ----------
    suite
        The suite (already parsed); it is resolved against the plugins first.
    out
        Parent folder of the results folder.
    jobs
        Worker processes (1 runs in this process).
    quick
        Apply the suite's ``quick`` overrides (fewer seeds, smaller problems).
    seeds
        Number of repetitions of every experiment, overriding the suite.
    progress
        Called with ``(cells_done, cells_total)`` after each cell.

    Returns
    -------
    Path
        The results folder.
    """
    experiments = resolve(suite, suite_path or "<suite>", quick=quick, seeds=seeds)
    device_cls = plugins.get("devices", suite.device)
    device = device_cls()
    if not device.is_available():
        raise MoebenchError(device.unavailable_reason())
    units = expand_units(suite, experiments)
    total = sum(len(u.experiment.algorithms) for u in units)
    store = ResultsStore(Path(out) / suite.name)
    manifest = manifest_base(suite, suite_path, device)
    manifest["started"] = datetime.now(UTC).isoformat()
    manifest["jobs"] = jobs
    manifest["quick"] = quick
    manifest["cells"] = total
    manifest["rank_by"] = {e.name: e.rank_by for e in experiments}
    manifest["metrics"] = {e.name: e.metrics for e in experiments}
    manifest["experiments"] = [_describe_experiment(e) for e in experiments]
    done = 0

    def on_cell(rows: list[dict[str, Any]]) -> None:
        nonlocal done
        store.append(rows)
        done += 1
        if progress is not None:
            progress(done, total)

    interrupted = True
    try:
        if jobs <= 1:
            for unit in units:
                run_unit(unit, on_cell)
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                                     initargs=(threads,)) as pool:
                futures = [pool.submit(run_unit, unit) for unit in units]
                for future in as_completed(futures):
                    for rows in future.result():
                        on_cell(rows)
        interrupted = False
    finally:
        manifest["finished"] = datetime.now(UTC).isoformat()
        manifest["interrupted"] = interrupted
        finals = [r for r in store.rows if r["record"] == "final"]
        manifest["status_counts"] = {
            s: sum(r["status"] == s for r in finals) for s in sorted({r["status"] for r in finals})
        }
        store.write_manifest(manifest)
        if store.rows:
            store.write_table()
            write_leaderboards(store.directory)
            if any(e.reference or e.figures for e in experiments):
                from .report import write_report

                write_report(store.directory)
    return store.directory


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
        "algorithms": {v.id: {"name": v.name, "params": v.params} for v in exp.algorithms},
        "reference": exp.reference.model_dump() if exp.reference else None,
        "figures": [f.model_dump() for f in exp.figures],
    }
