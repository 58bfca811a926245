"""What a run records about itself in ``manifest.json``.

The manifest holds the versions, the machine, the git commit and command line, the resolved
experiments (what the reports need to know about them), the direction of every metric (so that
reading results never asks the installed plugins which way a metric points), the run's state
and where its time went.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
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
        "datasets": {v.id: {"name": v.name, "params": v.params} for v in exp.datasets},
        "algorithms": {v.id: {"name": v.name, "params": v.params,
                              **({"budget": v.budget.model_dump()} if v.budget else {})}
                       for v in exp.algorithms},
        "reference": exp.reference.model_dump() if exp.reference else None,
        "figures": [f.model_dump() for f in exp.figures],
    }


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


def finish_manifest(manifest: dict[str, Any], store: ResultStore, state: str) -> None:
    """The end of a run in its manifest: time, state, time accounting, counts by status."""
    manifest["finished"] = datetime.now(UTC).isoformat()
    manifest["time_accounting"] = time_accounting(store, manifest)
    manifest["state"] = state
    manifest["interrupted"] = state != "complete"
    finals = store.finals()
    manifest["status_counts"] = {
        s: sum(r["status"] == s for r in finals) for s in sorted({r["status"] for r in finals})
    }
