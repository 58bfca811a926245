"""A cell's unit: the data, model and initial point that the cells of one unit share.

Cells sharing a dataset variant and repetition form a *unit*: the data is generated or loaded and
the initialisation drawn from the unit's seeds, so every algorithm sees the same data and starts
from the same point, whichever worker runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import plugins
from ..dataset import Data, check_fit_possible
from ..device import DTYPES, Device
from ..errors import DataUnavailable, UnsupportedProblem, describe_error
from ..metric import Metric
from ..model import Model, ParamDict
from ..seeding import torch_generator
from .rows import is_out_of_memory
from .spec import CellSpec, cell_fields

_WARM: set[str] = set()  # devices warmed up in this process


def build_model(data: Data, choice: Any, device: Device, dtype: torch.dtype) -> Model:
    """The model family a dataset proposes, with the suite's overrides applied.

    Parameters
    ----------
    data
        The loaded dataset (its ``model`` names the family and its parameters).
    choice
        The suite's ``model`` override of the dataset entry (name and parameters), or ``None``.
    device, dtype
        Where the model's tensors live.
    """
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
        truth = truth_for(model, data)
        init = model.init_params(exp.init, torch_generator(fields["init_seed"], "cpu"), truth)
        init = {k: v.to(device.torch_device()) for k, v in init.items()}
    except DataUnavailable as exc:
        return UnitFailure("skipped", str(exc), cause="data-unavailable")
    except UnsupportedProblem as exc:
        return UnitFailure("skipped", str(exc))
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        return UnitFailure("error", f"dataset {ds.id!r} failed: {describe_error(exc)}")
    return PreparedUnit(device, data, model, tensors, truth, init, metrics)


def truth_for(model: Model, data: Data) -> ParamDict | None:
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
