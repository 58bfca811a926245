"""What a run records about itself in ``manifest.json``.

The manifest holds the versions, the machine, the git commit and command line, the resolved
experiments (what the reports need to know about them), the direction of every metric (so that
reading results never asks the installed plugins which way a metric points), the run's state
and where its time went.

A folder's outputs describe every cell it holds (:meth:`.store.ResultStore.folder_cells`), also
those of earlier runs that a resumed run did not select; so a resumed run's manifest carries
over what the earlier manifest recorded about experiments, datasets, algorithms, metrics and
references that this run's selection leaves out (:func:`merge_recorded`; this run's entries
win), and lists every run that wrote into the folder (``runs``). Counts: ``cells`` and
``status_counts`` are this run's selection; ``cells_in_folder``, ``earlier_cells`` and
``folder_status_counts`` what the folder's outputs describe.

Two fields say how far a run got: ``state`` is about its cells (``running``, then
``complete`` when every cell ran, or ``interrupted``), ``outputs`` about the files computed
from them (:data:`OUTPUT_STATES`): ``writing`` from the end of the cells until the outputs
are written (what a manifest still says when the run died, or the disk was too full to
rewrite it, while they were written), then ``written``, or ``failed`` with ``output_errors``
(``"<output>: <error>"``); ``none`` when the folder holds no cell. A complete run whose
outputs failed is ``state: complete, outputs: failed``: its cells need not run again.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__, plugins
from ..device import Device
from ..suite import ResolvedExperiment, Suite
from .store import ResultStore


def _git_commit() -> str | None:
    """The commit of the moebench source tree that runs (``-dirty`` with local changes);
    ``None`` for an installed copy outside a git checkout."""
    source = Path(__file__).resolve().parent.parent.parent
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
    """Versions, plugins, machine, device, dtype, git commit and command line of a run."""
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


def metric_directions(experiments: list[ResolvedExperiment],
                      recorded: dict[str, str] | None = None) -> dict[str, str]:
    """``{metric: "min" | "max"}`` for every metric of ``experiments``, from the registered
    metric plugins, merged over what an earlier run in the same folder ``recorded``."""
    directions = dict(recorded or {})
    for exp in experiments:
        for name in exp.metrics:
            directions[name] = plugins.get("metrics", name).direction
    return dict(sorted(directions.items()))


def describe_experiment(exp: ResolvedExperiment) -> dict[str, Any]:
    """What the report needs to know about an experiment, stored in the manifest."""
    return {
        "name": exp.name,
        "description": exp.description,
        "repetitions": exp.repetitions,
        "budget": exp.budget.model_dump(),
        "init": exp.init.model_dump(),
        "metrics": exp.metrics,
        "rank_by": exp.rank_by,
        "objective": next((m for m in exp.metrics
                           if getattr(plugins.get("metrics", m), "training_objective", False)),
                          None),
        "datasets": {v.id: {"name": v.name, "params": v.params} for v in exp.datasets},
        "algorithms": {v.id: {"name": v.name, "params": v.params,
                              **({"budget": v.budget.model_dump()} if v.budget else {}),
                              **({"reference": True} if v.reference else {})}
                       for v in exp.algorithms},
        "reference": exp.reference.model_dump() if exp.reference else None,
        "figures": [f.model_dump() for f in exp.figures],
    }


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _union(first: Any, second: Any, key: Callable[[dict[str, Any]], Any]) -> list[Any]:
    """The dicts of ``first``, then those of ``second`` whose ``key`` none of them has."""
    out = [x for x in first or [] if isinstance(x, dict)]
    seen = {key(x) for x in out}
    return out + [x for x in second or [] if isinstance(x, dict) and key(x) not in seen]


def _merge_description(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """One experiment's description: this run's (``new``), with the datasets, algorithms,
    reference values, claims and figures that only an earlier run's (``old``) names."""
    merged = dict(new)
    for part in ("datasets", "algorithms"):
        merged[part] = {**_mapping(old.get(part)), **_mapping(new.get(part))}
    ref_old, ref_new = old.get("reference"), new.get("reference")
    if isinstance(ref_old, dict):
        merged["reference"] = ref_old if not isinstance(ref_new, dict) else {
            **ref_new,
            "values": _union(ref_new.get("values"), ref_old.get("values"), lambda v: (
                v.get("dataset"), v.get("algorithm"), v.get("metric"), v.get("iteration"))),
            "claims": _union(ref_new.get("claims"), ref_old.get("claims"),
                             lambda c: json.dumps(c, sort_keys=True, default=str))}
    merged["figures"] = _union(new.get("figures"), old.get("figures"), lambda f: (
        f.get("kind", "convergence"), f.get("metric"), f.get("x"), f.get("y")))
    return merged


def _earlier_run(recorded: dict[str, Any]) -> dict[str, Any]:
    """The ``runs`` entry of a manifest written before manifests listed their runs."""
    return {"started": recorded.get("started"), "finished": recorded.get("finished"),
            "state": recorded.get("state"), "command": recorded.get("command"),
            "experiments": [e.get("name") for e in recorded.get("experiments") or []
                            if isinstance(e, dict)],
            "cells": recorded.get("cells"), "computed": None,
            "reused": recorded.get("reused_cells")}


def run_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    """This run's entry in the manifest's ``runs``: its start, command line, selected
    experiments and number of cells (``finished``, ``state``, ``computed`` and ``reused`` are
    filled in by :func:`finish_manifest`).

    Parameters
    ----------
    manifest
        The manifest of the run, with ``started``, ``command``, ``cells`` and this run's own
        ``experiments`` (before :func:`merge_recorded`).

    Returns
    -------
    dict
        The entry.
    """
    return {"started": manifest.get("started"), "finished": None, "state": "running",
            "command": manifest.get("command"),
            "experiments": [e["name"] for e in manifest.get("experiments") or []],
            "cells": manifest.get("cells"), "computed": None, "reused": None}


def merge_recorded(manifest: dict[str, Any], recorded: dict[str, Any]) -> None:
    """Carry over into a resumed run's ``manifest`` what the folder's earlier manifest
    (``recorded``) says about what this run does not select, for the reports of the folder.

    ``rank_by`` and ``metrics``: the earlier entries of experiments this run does not select;
    ``experiments``: the earlier descriptions, in their order, each experiment this run selects
    replaced by this run's description merged with the earlier one (datasets, algorithms,
    reference values, claims and figures only the earlier one names are added), then this run's
    other experiments; ``runs``: the earlier runs before this run's. This run's entries win
    everywhere. ``metric_directions`` are merged by :func:`metric_directions`.

    Parameters
    ----------
    manifest
        This run's manifest (changed in place), with its one ``runs`` entry.
    recorded
        The manifest the folder held when the run started (``{}``: none).
    """
    for part in ("rank_by", "metrics"):
        manifest[part] = {**_mapping(recorded.get(part)), **_mapping(manifest.get(part))}
    now = {e["name"]: e for e in manifest.get("experiments") or []}
    merged: list[dict[str, Any]] = []
    seen: set[str] = set()
    for old in recorded.get("experiments") or []:
        if not isinstance(old, dict) or old.get("name") in seen or "name" not in old:
            continue
        seen.add(old["name"])
        merged.append(_merge_description(old, now.pop(old["name"])) if old["name"] in now
                      else old)
    manifest["experiments"] = merged + list(now.values())
    earlier = recorded.get("runs")
    if not isinstance(earlier, list):
        earlier = [_earlier_run(recorded)] if recorded.get("started") else []
    manifest["runs"] = [r for r in earlier if isinstance(r, dict)] + list(manifest.get("runs")
                                                                         or [])


#: Values of a manifest's ``outputs`` (see the module docstring).
OUTPUT_STATES = ("none", "writing", "written", "failed")


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


def _status_counts(finals: list[dict[str, Any]]) -> dict[str, int]:
    return {s: sum(r["status"] == s for r in finals) for s in sorted({r["status"] for r in finals})}


def finish_manifest(manifest: dict[str, Any], store: ResultStore, state: str) -> None:
    """The end of a run in its manifest: time, state, time accounting, counts by status.

    ``status_counts``: over this run's cells (the selection's cells it computed or kept);
    ``cells_in_folder``, ``earlier_cells`` (those of earlier runs outside this run) and
    ``folder_status_counts``: over every cell the folder's outputs describe
    (:meth:`.store.ResultStore.folder_cells`); ``time_accounting``: the cells this run computed;
    ``outputs``: ``writing`` (``none`` when the folder holds no cell) until
    :func:`moebench.reports.outputs.record_outputs` says how writing them went.
    The last ``runs`` entry gets the end, state and counts of this run; descriptions of
    earlier experiments that the folder holds no cell of are dropped.
    """
    manifest["finished"] = datetime.now(UTC).isoformat()
    manifest["time_accounting"] = time_accounting(store, manifest)
    manifest["state"] = state
    manifest["interrupted"] = state != "complete"
    finals, folder = store.finals(), store.finals(folder=True)
    manifest["status_counts"] = _status_counts(finals)
    manifest["cells_in_folder"] = len(folder)
    manifest["earlier_cells"] = len(folder) - len(finals)
    manifest["folder_status_counts"] = _status_counts(folder)
    manifest["outputs"] = "writing" if folder else "none"
    runs = manifest.get("runs")
    if not runs:
        return
    runs[-1].update(finished=manifest["finished"], state=state, computed=len(store.added),
                    reused=manifest.get("reused_cells"))
    held = {r.get("experiment") for r in folder} | set(runs[-1].get("experiments") or [])
    manifest["experiments"] = [e for e in manifest.get("experiments") or []
                               if e.get("name") in held]
    for part in ("rank_by", "metrics"):
        manifest[part] = {k: v for k, v in _mapping(manifest.get(part)).items() if k in held}
