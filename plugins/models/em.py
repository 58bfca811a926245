"""What a model family provides so that the EM-family algorithms can fit it.

``joint-em``, ``mirror-em`` and ``gradient-em`` are written once against :class:`SupportsEM`;
each model family implements its own M-step (closed form, Newton or inner gradient steps).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from moebench import Model, ParamDict


@dataclass(frozen=True)
class GateOptions:
    """How the gate M-step is solved and kept finite.

    Attributes
    ----------
    ridge
        Coefficient of ``ridge / 2 * ||W||_F^2``: keeps the soft-label softmax regression
        strongly concave, hence its maximiser finite when the posteriors are nearly separable.
    radius
        If set, the feasible set ``||w_i|| <= radius`` of Makkuva et al. (projected steps).
    max_steps
        Newton (or inner gradient) steps per gate M-step.
    """

    ridge: float = 1e-6
    radius: float | None = None
    max_steps: int = 20


GATE_FIELDS: dict[str, Any] = {
    "tol": Field(
        1e-8, ge=0, description="stop when the relative decrease of the training NLL falls "
        "below tol (0 disables)"
    ),
    "gate_ridge": Field(
        1e-6, ge=0, description="ridge on the gate in its M-step; keeps it finite when the "
        "posteriors are separable (0 disables; then set gate_radius)"
    ),
    "gate_radius": Field(
        None, gt=0, description="norm-ball feasible set ||w_i|| <= gate_radius (Makkuva et al.); "
        "None = unconstrained"
    ),
    "gate_steps": Field(20, ge=1, description="maximum Newton steps per gate M-step"),
}


class SupportsEM(Model):
    """A model family with an E-step (:meth:`posterior`) and an M-step."""

    @abstractmethod
    def joint_log_probs(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(y_n, z_n = i | x_n)``, shape ``(n, k)``; differentiable in ``params``."""

    @abstractmethod
    def param_groups(self) -> dict[str, list[str]]:
        """Parameter names by block: ``{"experts": [...], "gate": [...]}``."""

    @abstractmethod
    def m_step(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor,
        params: ParamDict,
        gate: GateOptions,
        eta: float = 1.0,
    ) -> tuple[ParamDict, dict[str, float]]:
        """Maximise the M-step objective from ``params``; return new parameters and diagnostics.

        With ``eta = 1`` this is EM's M-step, ``argmax Q(theta | theta_t)`` with responsibilities
        ``R``. With ``0 < eta < 1`` it is the mirror-descent step of Fruytier et al. in the KL
        geometry of the complete-data model: the expected sufficient statistics are
        ``eta * S(R) + (1 - eta) * grad A(theta_t)``, i.e. responsibilities mixed with the
        model's own predictions at ``theta_t``. No step may decrease its objective.
        """

    def q_value(
        self, params: ParamDict, X: torch.Tensor, y: torch.Tensor, R: torch.Tensor
    ) -> torch.Tensor:
        """``Q(theta | theta_t) / n = mean_n sum_i R_ni log p(y_n, z_n = i | x_n; theta)``."""
        joint = self.joint_log_probs(params, X, y)
        return torch.where(R > 0, R * joint, torch.zeros_like(joint)).sum() / X.shape[0]
