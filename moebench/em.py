"""The EM contract: what a model family provides so that the EM-family algorithms can fit it.

``joint-em``, ``mirror-em`` and ``gradient-em`` are written once against :class:`SupportsEM`;
each model family implements its own M-step (closed form, Newton or inner gradient steps).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Self

import torch
from pydantic import Field, model_validator

from moebench.model import Model, ParamDict
from moebench.params import Params

__all__ = ["GATE_FIELDS", "EMParams", "GateOptions", "SupportsEM", "check_gate_safeguard"]


def check_gate_safeguard(ridge: float, radius: float | None, name: str = "gate_ridge") -> None:
    """Reject a gate M-step that could diverge: no ridge and no norm ball.

    Parameters
    ----------
    ridge
        The gate ridge (``gate_ridge``); must be non-negative.
    name
        The parameter ``ridge`` comes from, as the messages name it.
    radius
        The norm-ball radius (``gate_radius``), or ``None``.

    Raises
    ------
    ValueError
        ``ridge < 0``, ``radius <= 0``, or ``ridge == 0`` without a radius (the soft-label softmax
        regression has no finite maximiser when the posteriors are separable).
    """
    if ridge < 0:
        raise ValueError(f"{name} must be >= 0 (got {ridge})")
    if radius is not None and not radius > 0:
        raise ValueError(f"gate_radius must be positive or None (got {radius})")
    if ridge == 0 and radius is None:
        raise ValueError(
            f"{name}=0 needs a gate_radius: without a ridge or a norm ball the gate M-step "
            f"has no finite maximiser when the posteriors are separable; set {name} > 0 or "
            "gate_radius"
        )


@dataclass(frozen=True)
class GateOptions:
    """How the gate M-step is solved and kept finite.

    Attributes
    ----------
    ridge
        Coefficient of ``ridge / 2 * ||W||_F^2``: keeps the soft-label softmax regression
        strongly concave, hence its maximiser finite when the posteriors are nearly separable.
    radius
        If set, the feasible set ``||w_i|| <= radius`` of Makkuva et al. (projected steps);
        ``ridge`` may then be 0. ``ridge = 0`` without a radius is rejected.
    max_steps
        Newton (or inner gradient) steps per gate M-step.
    """

    ridge: float = 1e-6
    radius: float | None = None
    max_steps: int = 20

    def __post_init__(self) -> None:
        check_gate_safeguard(self.ridge, self.radius)


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


class EMParams(Params):
    """Parameters shared by the EM-family algorithms (``tol`` and the gate M-step's settings).

    A validator rejects ``gate_ridge=0`` without ``gate_radius``, so a suite asking for it fails
    when it is loaded, before anything runs.
    """

    tol: float = GATE_FIELDS["tol"]
    gate_ridge: float = GATE_FIELDS["gate_ridge"]
    gate_radius: float | None = GATE_FIELDS["gate_radius"]
    gate_steps: int = GATE_FIELDS["gate_steps"]

    @model_validator(mode="after")
    def _check_gate(self) -> Self:
        check_gate_safeguard(self.gate_ridge, self.gate_radius)
        return self

    def gate_options(self) -> GateOptions:
        """The :class:`GateOptions` these parameters describe."""
        return GateOptions(
            ridge=self.gate_ridge, radius=self.gate_radius, max_steps=self.gate_steps
        )


class SupportsEM(Model):
    """A model family with an E-step (:meth:`posterior`) and an M-step."""

    @abstractmethod
    def joint_log_probs(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(y_n, z_n = i | x_n)``, shape ``(n, k)``; differentiable in ``params``."""

    def log_likelihood(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample ``log p(y_n | x_n)``: log-sum-exp of :meth:`joint_log_probs` over experts."""
        return torch.logsumexp(self.joint_log_probs(params, X, y), dim=1)

    def posterior(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Responsibilities ``p(z_n = i | x_n, y_n)``: softmax of :meth:`joint_log_probs`."""
        return torch.softmax(self.joint_log_probs(params, X, y), dim=1)

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

        A family that cannot take steps with ``eta != 1`` raises
        :class:`moebench.errors.UnsupportedProblem` (and says so in
        :meth:`mirror_step_unsupported`).
        """

    def mirror_step_unsupported(self) -> str | None:
        """``None`` if :meth:`m_step` supports ``eta < 1`` for this family, else why not.

        The default assumes it does; families override it.
        """
        return None

    def complete_data_kl(
        self, params_old: ParamDict, params_new: ParamDict, X: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample ``KL(p(y, z | x_n; old) || p(y, z | x_n; new))``, shape ``(n,)``.

        Averaged over samples this is the Bregman divergence ``D_A(new, old)`` of the mirror map
        of Fruytier et al. (the mean complete-data log-partition). Optional: the default raises
        ``NotImplementedError`` and ``mirror-em`` then omits ``kl_step`` and ``md_objective``.
        """
        raise NotImplementedError(f"{self.name} has no closed-form complete-data KL")

    def em_step(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        params: ParamDict,
        gate: GateOptions,
        *,
        keep_responsibilities: bool = True,
    ) -> tuple[ParamDict, dict[str, float]]:
        """One EM iteration: E-step then :meth:`m_step` with ``eta = 1``.

        Families with a fused kernel (E-step and M-step statistics in one pass over the data)
        override it; ``keep_responsibilities`` then lets them stream data larger than memory.
        """
        R = self.posterior(params, X, y)
        return self.m_step(X, y, R, params, gate)

    def q_value(
        self, params: ParamDict, X: torch.Tensor, y: torch.Tensor, R: torch.Tensor
    ) -> torch.Tensor:
        """``Q(theta | theta_t) / n = mean_n sum_i R_ni log p(y_n, z_n = i | x_n; theta)``."""
        joint = self.joint_log_probs(params, X, y)
        return torch.where(R > 0, R * joint, torch.zeros_like(joint)).sum() / X.shape[0]
