"""The ``Algorithm`` interface and the per-iteration callback protocol.

An algorithm reports its state through ``callback(Iterate)`` once before its first step
(iteration 0) and after every step. The callback returns ``False`` when the algorithm must stop
(budget exhausted or divergence); the runner stops the clock while it computes metrics, as
benchopt's callback mode does. An algorithm that converges by its own criterion simply returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .density import GaussianMixtureDensity
from .model import Model, ParamDict
from .params import NoParams, Params


@dataclass
class Iterate:
    """What an algorithm reports after an iteration.

    Attributes
    ----------
    iteration
        0 for the initial point, then 1, 2, ...
    params
        Current parameters (not copied: the callback must not modify them).
    objective
        The quantity the algorithm itself monitors (e.g. training NLL), if it has one.
    extras
        Further scalar diagnostics (step size, KL divergence of the step, ...).
    """

    iteration: int
    params: ParamDict
    objective: float | None = None
    extras: dict[str, float] = field(default_factory=dict)


Callback = Callable[[Iterate], bool]


@dataclass
class Problem:
    """What an algorithm is given: a model family, training data and randomness.

    Attributes
    ----------
    model
        The family to fit, on the run's device and dtype.
    X, y
        Training inputs ``(n, d)`` and targets ``(n,)`` on the model's device.
    generator
        The only source of randomness an algorithm may use (seeded by the runner, on the run's
        device: draw with ``torch.rand(..., generator=g, device=g.device)``).
    input_density
        The density of the inputs when the dataset knows it (score-function methods); ``None``
        when unknown.
    """

    model: Model
    X: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    input_density: GaussianMixtureDensity | None = None


class Algorithm(ABC):
    """A method that fits a :class:`Model` to data.

    Subclasses set ``name``, ``summary`` and ``Params`` and implement :meth:`fit`; they may
    override :meth:`unsupported_reason` to decline model families they cannot fit.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = NoParams

    def __init__(self, params: Params | None = None):
        self.params = params if params is not None else self.Params()

    def unsupported_reason(self, model: Model) -> str | None:
        """``None`` if this algorithm can fit ``model``, else why not (cells are skipped)."""
        return None

    @abstractmethod
    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Fit from ``init``, calling ``callback`` at iteration 0 and after every step.

        Returns the final parameters. Stops as soon as ``callback`` returns ``False``.
        """
