"""Numerical helpers of the regression MoE: noise updates, solves, gate and expert objectives.

Plain functions on tensors and :class:`~moebench_plugins.models.kernels.RowChunks`, shared by the
EM, mirror and gradient code of :class:`~moebench_plugins.models.regression.RegressionMoE`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..gate import project_rows
from ..kernels import ExpertStats, RowChunks, activate

__all__ = [
    "LOG_2PI",
    "activate_grad",
    "expert_q",
    "full_gate_grad",
    "gate_probs",
    "gate_q",
    "gate_step_rejected",
    "gauss_newton",
    "noise_from_residuals",
    "projected_gate",
    "rows_to_norm",
    "solve_sym",
    "to_frobenius",
    "weighted_sse",
]

LOG_2PI = math.log(2.0 * math.pi)


def activate_grad(t: torch.Tensor, activation: str) -> torch.Tensor:
    """The derivative ``g'`` applied elementwise (0 at the kink of the ReLU)."""
    if activation == "linear":
        return torch.ones_like(t)
    if activation == "sigmoid":
        s = torch.sigmoid(t)
        return s * (1 - s)
    if activation == "relu":
        return (t > 0).to(t.dtype)
    raise ValueError(f"unknown activation {activation!r}")


def noise_from_residuals(noise: str, res2: torch.Tensor, mass: torch.Tensor, floor: float,
                         log_sigma: torch.Tensor, n: int) -> torch.Tensor:
    """The noise M-step from per-expert weighted residual sums ``res2`` and masses ``mass``:
    ``log sigma_i = log(res2_i / mass_i) / 2`` (pooled over experts for ``shared`` noise),
    variances floored at ``floor``; an expert without responsibility keeps its ``log_sigma``."""
    if noise == "shared":
        s2 = (res2.sum() / mass.sum()).clamp_min(floor)
        return torch.full_like(log_sigma, 0.5) * torch.log(s2)
    s2 = (res2 / mass.clamp_min(1e-300)).clamp_min(floor)
    return torch.where(mass > 1e-12 * n, 0.5 * torch.log(s2), log_sigma)


def gate_probs(chunks: RowChunks, W: torch.Tensor) -> torch.Tensor:
    """The gate probabilities ``softmax(W f_n)``, ``(n, k)`` with the samples contiguous (the
    transpose of a ``(k, n)`` tensor: chunks of it are rows, as the passes read labels)."""
    d = chunks.n_features
    W = W.to(chunks.device, chunks.dtype)
    out = W.new_empty(W.shape[0], chunks.n_rows)
    for s, e, Z in chunks:
        out[:, s:e] = torch.softmax(W @ Z[:d], dim=0)
    return out.T


def expert_q(stats: ExpertStats, A: torch.Tensor, log_sigma: torch.Tensor, grad: bool
             ) -> tuple[float, torch.Tensor | None, torch.Tensor | None]:
    """``sum_n sum_i r_ni log N(y_n; a_i . f_n, sigma_i^2)`` from the statistics of ``r`` and,
    with ``grad``, its gradients in ``A`` and ``log_sigma`` (sums over samples)."""
    inv_var = torch.exp(-2.0 * log_sigma)
    sse = stats.sse(A)
    q = float((stats.mass * (-0.5 * LOG_2PI - log_sigma) - 0.5 * inv_var * sse).sum())
    if not grad:
        return q, None, None
    GA = torch.matmul(stats.G, A.unsqueeze(2)).squeeze(2)
    return q, inv_var[:, None] * (stats.b - GA), inv_var * sse - stats.mass


def full_gate_grad(grad: torch.Tensor) -> torch.Tensor:
    """The gradient in all ``k`` gate rows from that in the free rows (labels summing to one:
    the rows' gradients sum to zero)."""
    return torch.cat([grad, -grad.sum(dim=0, keepdim=True)])


def gate_q(log_gate: torch.Tensor, R: torch.Tensor) -> float:
    """Unpenalised gate part of the EM objective, ``sum_n sum_i R_ni log p_i(x_n)``."""
    return float(torch.where(R > 0, R * log_gate, torch.zeros_like(log_gate)).sum())


def projected_gate(W: torch.Tensor, radius: float | None) -> torch.Tensor:
    """``W`` with its free rows ``W[:-1]`` projected onto ``||w_i|| <= radius`` (``W`` itself
    without a radius): the start of a gate M-step, against which its result is compared."""
    if radius is None:
        return W
    return torch.cat([project_rows(W[:-1], radius), W[-1:]], dim=0)


def gate_step_rejected(info: dict[str, Any], W_old: torch.Tensor, W: torch.Tensor,
                       ridge: float, n: int) -> bool:
    """Whether a chunked gate solve from ``W_old`` to ``W`` lowered the unpenalised gate ``q``.

    ``info`` is that of :func:`~moebench_plugins.models.gate.fit_gate_chunked`, whose ``J =
    q / n - ridge / 2 ||W||^2`` at both ends of the Newton solve gives the unpenalised ``q``.
    """
    old_q = n * (info["J0"] + 0.5 * ridge * float(W_old.square().sum()))
    new_q = n * (info["J"] + 0.5 * ridge * float(W.square().sum()))
    return not (new_q >= old_q)


def rows_to_norm(M: torch.Tensor, norm: float) -> torch.Tensor:
    """``M`` with every row rescaled to Euclidean norm ``norm``."""
    return M * (norm / M.norm(dim=1, keepdim=True).clamp_min(1e-300))


def to_frobenius(M: torch.Tensor, norm: float) -> torch.Tensor:
    """``M`` rescaled to Frobenius norm ``norm``."""
    return M * (norm / M.norm().clamp_min(1e-300))


def weighted_sse(
    F: torch.Tensor, y: torch.Tensor, r: torch.Tensor, a: torch.Tensor, act: str
) -> float:
    """``sum_n r_n (y_n - g(f_n . a))^2`` for the expert ``a`` and activation ``act``."""
    return float((r * (y - activate(F @ a, act)).square()).sum())


def solve_sym(G: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``G x = b`` for a symmetric ``G``: Cholesky, least squares where that fails."""
    L, info = torch.linalg.cholesky_ex(G)
    if int(info) == 0:
        return torch.cholesky_solve(b[:, None], L)[:, 0]
    return torch.linalg.lstsq(G, b[:, None]).solution[:, 0]


def gauss_newton(
    F: torch.Tensor,
    y: torch.Tensor,
    r: torch.Tensor,
    a: torch.Tensor,
    act: str,
    steps: int,
    eye: torch.Tensor,
) -> torch.Tensor:
    """Damped Gauss-Newton on ``sum_n r_n (y_n - g(f_n . a))^2``; only decreasing steps."""
    sse = weighted_sse(F, y, r, a, act)
    for _ in range(steps):
        u = F @ a
        res = y - activate(u, act)
        J = activate_grad(u, act)[:, None] * F
        G = J.T @ (r[:, None] * J)
        lam = 1e-8 * (G.diagonal().mean() + 1e-300)
        delta = solve_sym(G + lam * eye, J.T @ (r * res))
        if not torch.isfinite(delta).all():
            break
        t, improved = 1.0, False
        for _ in range(20):
            cand = a + t * delta
            new = weighted_sse(F, y, r, cand, act)
            if new < sse:
                a, sse, improved = cand, new, True
                break
            t *= 0.5
        if not improved:
            break
    return a
