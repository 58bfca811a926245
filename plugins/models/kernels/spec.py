"""What one chunk kernel computes (:class:`KernelSpec`), its inputs and the experts' activation."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["KernelSpec", "activate"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class KernelSpec:
    """What one chunk kernel computes; each spec is one (eager or compiled) kernel variant.

    Attributes
    ----------
    k
        Number of experts.
    n_features
        Rows of ``F`` in a chunk (features and the intercept row, if any).
    activation
        Expert non-linearity (``"linear"``, ``"sigmoid"`` or ``"relu"``).
    posterior
        Compute the E-step at the parameters (else the responsibilities are given).
    per_sample
        Return the per-sample log-likelihoods and responsibilities of the E-step.
    expert_stats
        Accumulate the linear-expert statistics (mass and weighted Grams of ``[f; y]``).
    gate
        Accumulate the gate objective ``q``.
    gate_system
        Also the gate gradient and, with ``gate_hessian``, the Hessian weights (weighted Grams
        of ``f``).
    gate_hessian
        With ``gate_system``: the Hessian too (else the gradient alone).
    """

    k: int
    n_features: int
    activation: str = "linear"
    posterior: bool = True
    per_sample: bool = False
    expert_stats: bool = False
    gate: bool = False
    gate_system: bool = False
    gate_hessian: bool = True

    @functools.cached_property
    def pairs(self) -> list[tuple[int, int]]:
        """Free gate-row pairs ``a <= b < k - 1`` of the Hessian blocks."""
        if not (self.gate_system and self.gate_hessian):
            return []
        km1 = self.k - 1
        return [(a, b) for a in range(km1) for b in range(a, km1)]

    @property
    def gram_rows(self) -> int:
        """Rows ``D`` of the chunk entering the expert Grams (``[f; y]``)."""
        return self.n_features + 1 if self.expert_stats else self.n_features


@functools.lru_cache(maxsize=256)
def _kernel_spec(*args: Any) -> KernelSpec:
    """The :class:`KernelSpec` of these fields, built once (a pass per Newton step asks again)."""
    return KernelSpec(*args)


def activate(t: torch.Tensor, activation: str) -> torch.Tensor:
    """The expert non-linearity ``g`` applied elementwise."""
    if activation == "linear":
        return t
    if activation == "sigmoid":
        return torch.sigmoid(t)
    if activation == "relu":
        return torch.relu(t)
    raise ValueError(f"unknown activation {activation!r}")


def _pass_inputs(A: torch.Tensor, W: torch.Tensor, log_sigma: torch.Tensor,
                 dev: torch.device, dt: torch.dtype, posterior: bool,
                 gate: bool) -> tuple[torch.Tensor, ...]:
    """The kernel inputs ``(AW, const, inv_sigma)`` on ``dev`` in ``dt``
    (:func:`~.elementwise._make_kernel`)."""
    A, W, log_sigma = A.to(dev, dt), W.to(dev, dt), log_sigma.to(dev, dt)
    rows = ([A] if posterior else []) + ([W] if posterior or gate else [])
    AW = torch.cat(rows, dim=0) if rows else A.new_zeros(0, A.shape[1])
    return AW, -0.5 * _LOG_2PI - log_sigma, torch.exp(-log_sigma)
