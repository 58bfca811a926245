"""The ``Model`` interface: an MoE model family (experts + gate) over torch tensors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from .errors import UnsupportedProblem
from .params import NoParams, Params

#: Model parameters: named tensors on the model's device (e.g. ``{"A": (k, d), "W": (k, d)}``).
ParamDict = dict[str, torch.Tensor]


class InitSpec(BaseModel):
    """How to initialise parameters; shared by every algorithm of an experiment.

    ``random``: Gaussian entries with standard deviation ``scale / sqrt(d)``.
    ``unit-rows``: Gaussian rows rescaled to norm ``scale`` (Fruytier et al.'s "unit norm").
    ``near-truth``: the truth plus a random perturbation of Frobenius norm ``radius`` per block
    (needs a dataset with known truth).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    scheme: Literal["random", "unit-rows", "near-truth"] = "random"
    scale: float = Field(1.0, gt=0, description="scale of random/unit-rows initialisations")
    radius: float = Field(0.5, ge=0, description="distance from the truth for near-truth")


class Model(ABC):
    """An MoE model family with fixed hyper-parameters.

    Parameters
    ----------
    params
        The family's hyper-parameters (number of experts, activation, noise model, ...).
    n_features
        Input dimension ``d`` of the data it will be fitted to.
    n_classes
        Number of classes for classification families (``None`` for regression).
    device, dtype
        Where and in which precision parameters and data live.

    Every method takes and returns tensors on ``device``; log-likelihoods are per sample and
    computed with log-sum-exp so that they stay finite for separable posteriors.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    task: ClassVar[Literal["regression", "classification"]] = "regression"
    Params: ClassVar[type[Params]] = NoParams

    def __init__(
        self,
        params: Params | None = None,
        *,
        n_features: int,
        n_classes: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ):
        self.params = params if params is not None else self.Params()
        self.n_features = int(n_features)
        if self.task == "classification" and (n_classes is None or int(n_classes) < 2):
            raise UnsupportedProblem(
                f"{self.name} needs classification data with n_classes >= 2 (got {n_classes})"
            )
        self.n_classes = int(n_classes) if n_classes is not None else None
        self.device = torch.device(device)
        self.dtype = dtype

    @property
    def n_experts(self) -> int:
        """Number of experts ``k`` (the ``k`` hyper-parameter unless a family fixes it)."""
        return int(self.params.k)

    def randn(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Standard normal draws from ``generator`` (in float64 on the generator's device, so
        the numbers do not depend on the model's dtype), on the model's device and dtype."""
        t = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
        return t.to(self.device, self.dtype)

    @abstractmethod
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every parameter tensor, by name."""

    @abstractmethod
    def init_params(
        self, spec: InitSpec, generator: torch.Generator, truth: ParamDict | None = None
    ) -> ParamDict:
        """Initial parameters drawn with ``generator`` according to ``spec``."""

    @abstractmethod
    def log_likelihood(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample ``log p(y_n | x_n)``, shape ``(n,)``; differentiable in ``params``."""

    @abstractmethod
    def posterior(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Responsibilities ``p(z_n = i | x_n, y_n)``, shape ``(n, k)``, rows summing to one."""

    @abstractmethod
    def predict(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``E[y | x]`` for regression ``(n,)``; class probabilities ``(n, C)`` otherwise."""

    @abstractmethod
    def parameter_error(self, params: ParamDict, truth: ParamDict) -> float:
        """Distance to the truth, minimised over permutations of the experts."""

    def trainable(self, params: ParamDict) -> list[str]:
        """Names of the parameters a gradient method should update (default: all).

        Families with fixed parameters (a known noise level, say) return fewer names.
        """
        return list(params)

    def free_params(self, params: ParamDict) -> dict[str, torch.Tensor]:
        """Unconstrained tensors a gradient method optimises (detached copies).

        The default is the :meth:`trainable` parameters themselves; families with constraints
        (a gate row fixed at zero, a shared noise level) return a smaller parametrisation and
        map it back in :meth:`from_free`.
        """
        return {name: params[name].detach().clone() for name in self.trainable(params)}

    def from_free(self, free: dict[str, torch.Tensor], params: ParamDict) -> ParamDict:
        """Full parameters from :meth:`free_params`, differentiably; ``params`` gives the rest."""
        return {**params, **free}

    def nll(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood (a scalar tensor)."""
        return -self.log_likelihood(params, X, y).mean()

    def as_tensors(self, arrays: dict) -> ParamDict:
        """Copy a dict of arrays onto this model's device and dtype."""
        return {
            k: torch.as_tensor(v).to(device=self.device, dtype=self.dtype)
            for k, v in arrays.items()
        }
