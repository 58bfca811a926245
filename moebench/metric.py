"""The ``Metric`` interface and the evaluation context metrics read from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from .model import Model, ParamDict
from .params import NoParams, Params


@dataclass
class EvalContext:
    """Everything a metric may look at, with a per-evaluation cache for shared work.

    ``meta`` is the dataset's metadata (e.g. ``y_scale`` to report errors in original units).
    """

    model: Model
    params: ParamDict
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    truth: ParamDict | None
    meta: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute once per evaluation (e.g. test log-likelihoods used by two metrics)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


class Metric(ABC):
    """A scalar score of fitted parameters.

    ``direction`` says whether lower (``"min"``) or higher (``"max"``) is better;
    ``requires_truth`` metrics give NaN on data without ground truth; ``uses_test`` metrics
    (by default those named ``test_*``) give NaN on data without a test split; ``tasks`` lists
    the tasks the metric applies to. ``training_objective`` marks the loss that every algorithm
    minimises on the training data, computed by one formula for all of them (the mean training
    negative log-likelihood): the report draws its suboptimality (benchopt's view) and the time
    each algorithm takes to come within a tolerance of the best value reached.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    direction: ClassVar[Literal["min", "max"]] = "min"
    requires_truth: ClassVar[bool] = False
    #: Whether the metric reads the test split; ``None``: whether its name starts with ``test_``.
    uses_test: ClassVar[bool | None] = None
    tasks: ClassVar[tuple[str, ...]] = ("regression", "classification")
    training_objective: ClassVar[bool] = False
    Params: ClassVar[type[Params]] = NoParams

    def __init__(self, params: Params | None = None):
        self.params = params if params is not None else self.Params()

    def applies_to(self, ctx: EvalContext) -> bool:
        """Whether the metric is defined for this model and data."""
        if self.requires_truth and ctx.truth is None:
            return False
        if self.reads_test_split() and int(ctx.X_test.shape[0]) == 0:
            return False
        return ctx.model.task in self.tasks

    def reads_test_split(self) -> bool:
        """Whether the metric needs the test split (``uses_test``, by default ``test_*``)."""
        return self.name.startswith("test_") if self.uses_test is None else bool(self.uses_test)

    @abstractmethod
    def compute(self, ctx: EvalContext) -> float:
        """The metric's value."""

    def __call__(self, ctx: EvalContext) -> float:
        if not self.applies_to(ctx):
            return float("nan")
        with torch.no_grad():
            return float(self.compute(ctx))
