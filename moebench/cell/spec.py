"""What a cell is: its picklable description, its stable key and its identifying columns.

A cell is (experiment, dataset variant, algorithm variant, repetition). Its :class:`CellSpec`
is small and picklable: a worker, local or on a cluster, regenerates or loads the cell's data
from the seeds it derives, so no array is ever shipped from the client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import __version__, plugins
from ..seeding import derive_seed
from ..suite import ResolvedExperiment, Variant


@dataclass(frozen=True)
class CellSpec:
    """Everything a worker needs to run one cell.

    Attributes
    ----------
    suite, suite_seed
        The suite's name and seed (every other seed derives from it).
    experiment
        The resolved experiment (budget, init, metrics, every variant).
    dataset, algorithm
        The dataset and algorithm variants of this cell.
    repetition
        Index of the repetition (seed) of the dataset variant.
    device, dtype
        Registered device name and dtype name (``None``: the device's default).
    key
        Stable hash of the cell's resolved configuration and the versions that compute it.
    """

    suite: str
    suite_seed: int
    experiment: ResolvedExperiment
    dataset: Variant
    algorithm: Variant
    repetition: int
    device: str
    dtype: str | None
    key: str

    @property
    def unit(self) -> tuple[Any, ...]:
        """Cells with the same unit share their data and initial point."""
        return (self.suite_seed, self.experiment.name, self.dataset.id, self.repetition,
                self.device, self.dtype)

    def label(self) -> str:
        """``experiment / dataset / algorithm #repetition``, for messages."""
        return (f"{self.experiment.name} / {self.dataset.id} / {self.algorithm.id} "
                f"#{self.repetition}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def cell_key(
    *,
    suite_seed: int,
    experiment: ResolvedExperiment,
    dataset: Variant,
    algorithm: Variant,
    repetition: int,
    device: str,
    dtype: str | None,
) -> str:
    """The stable key of a cell: SHA-256 of its full resolved configuration and versions.

    The configuration covers the suite seed, the experiment's name, the cell's budget (the
    algorithm entry's own, else the experiment's), initialisation and
    metrics, both variants (plugin name, parameters, model override), the repetition, the
    device and dtype; the versions are moebench's and those of the distributions that register
    the cell's dataset, algorithm, device and metrics. A cell computed under another
    configuration or another version of its code gets another key and is not reused by
    ``--resume``.
    """
    config = {
        "suite_seed": suite_seed,
        "experiment": experiment.name,
        "budget": experiment.budget_for(algorithm).model_dump(),  # an entry's own budget too
        "init": experiment.init.model_dump(),
        "metrics": list(experiment.metrics),
        "dataset": {"name": dataset.name, "params": dataset.params,
                    "model": dataset.model.model_dump() if dataset.model else None},
        "algorithm": {"name": algorithm.name, "params": algorithm.params},
        "repetition": repetition,
        "device": device,
        "dtype": dtype,
        "versions": {
            "moebench": __version__,
            "dataset": plugins.owner_version("datasets", dataset.name),
            "algorithm": plugins.owner_version("algorithms", algorithm.name),
            "device": plugins.owner_version("devices", device),
            "metrics": {m: plugins.owner_version("metrics", m) for m in experiment.metrics},
        },
    }
    return hashlib.sha256(_canonical(config).encode()).hexdigest()[:32]


def expand_cells(
    suite_name: str, suite_seed: int, experiments: list[ResolvedExperiment], device: str,
    dtype: str | None,
) -> Iterator[CellSpec]:
    """Every cell of the resolved experiments, unit by unit, in a fixed order."""
    for exp in experiments:
        for ds in exp.datasets:
            for rep in range(exp.repetitions):
                for alg in exp.algorithms:
                    key = cell_key(suite_seed=suite_seed, experiment=exp, dataset=ds,
                                   algorithm=alg, repetition=rep, device=device, dtype=dtype)
                    yield CellSpec(suite_name, suite_seed, exp, ds, alg, rep, device, dtype, key)


def json_text(value: Any) -> str:
    """``value`` as sorted-key JSON text, as a row's parameter columns hold it."""
    return json.dumps(value, sort_keys=True, default=str)


def cell_fields(spec: CellSpec) -> dict[str, Any]:
    """The identifying columns every row of a cell carries (ids, parameters, seeds, key)."""
    exp, ds, alg, rep = spec.experiment, spec.dataset, spec.algorithm, spec.repetition
    return {
        "suite": spec.suite,
        "experiment": exp.name,
        "dataset": ds.id,
        "dataset_name": ds.name,
        "dataset_params": json_text(ds.params),
        "repetition": rep,
        "data_seed": derive_seed(spec.suite_seed, exp.name, ds.id, rep, "data"),
        "init_seed": derive_seed(spec.suite_seed, exp.name, ds.id, rep, "init"),
        "algorithm": alg.id,
        "algorithm_name": alg.name,
        "algorithm_params": json_text(alg.params),
        "seed": derive_seed(spec.suite_seed, exp.name, ds.id, alg.id, rep),
        "key": spec.key,
    }
