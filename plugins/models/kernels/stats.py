"""The sums over samples a pass returns (:class:`ExpertStats`, :class:`GateStats`,
:class:`PassStats`) and the experts' weighted least squares from them (:func:`solve_experts`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ExpertStats", "GateStats", "PassStats", "solve_experts"]


@dataclass
class ExpertStats:
    """Weighted sufficient statistics of linear experts (sums over samples).

    Attributes
    ----------
    mass
        ``sum_n r_ni``, shape ``(k,)``.
    G
        ``sum_n r_ni f_n f_n^T``, shape ``(k, d', d')``.
    b
        ``sum_n r_ni y_n f_n``, shape ``(k, d')``.
    yy
        ``sum_n r_ni y_n^2``, shape ``(k,)``.
    """

    mass: torch.Tensor
    G: torch.Tensor
    b: torch.Tensor
    yy: torch.Tensor

    def sse(self, A: torch.Tensor) -> torch.Tensor:
        """Weighted residual sums ``sum_n r_ni (y_n - a_i . f_n)^2`` of rows ``A``, ``(k,)``."""
        GA = torch.matmul(self.G, A.unsqueeze(2)).squeeze(2)
        return self.yy - 2.0 * (A * self.b).sum(1) + (A * GA).sum(1)

    def sse_change(self, A_new: torch.Tensor, A_old: torch.Tensor) -> torch.Tensor:
        """``sse(A_new) - sse(A_old)`` computed without cancellation of ``yy``, shape ``(k,)``."""
        S = torch.matmul(self.G, (A_new + A_old).unsqueeze(2)).squeeze(2)
        return ((A_new - A_old) * (S - 2.0 * self.b)).sum(1)


@dataclass
class GateStats:
    """Soft-label softmax-regression objective and Newton system at ``W`` (sums over samples).

    Attributes
    ----------
    q
        ``sum_n sum_i r_ni log p_i(f_n)`` (terms with ``r_ni = 0`` count as 0).
    grad
        ``sum_n (r_na - s_n p_na) f_n`` for the free rows ``a < k``, shape ``(k-1, d')``;
        ``s_n = sum_i r_ni``.
    neg_hessian
        ``sum_n s_n (diag(p_n) - p_n p_n^T)_{ab} f_n f_n^T``, shape ``((k-1) d', (k-1) d')`` in
        row-major order of the free rows; ``None`` when not requested.
    """

    q: float
    grad: torch.Tensor | None
    neg_hessian: torch.Tensor | None


@dataclass
class PassStats:
    """What one :func:`em_pass` accumulated.

    Attributes
    ----------
    loglik
        ``sum_n log p(y_n | x_n)`` (``nan`` when labels were given).
    experts
        Linear-expert statistics, or ``None``.
    gate
        Gate objective and Newton system at ``W``, or ``None``.
    """

    loglik: float
    experts: ExpertStats | None
    gate: GateStats | None


def solve_experts(stats: ExpertStats, A_old: torch.Tensor, n: int) -> torch.Tensor:
    """Weighted least squares per expert from :class:`ExpertStats`, safeguarded.

    ``a_i = (G_i + lam I)^{-1} b_i`` with ``lam = 1e-10 mean(diag G_i)``; an expert with no mass
    (``<= 1e-12 n``), a non-finite solution or a larger weighted residual sum keeps ``a_i``.

    Parameters
    ----------
    stats
        Statistics of the pass.
    A_old
        Current rows ``(k, d')``.
    n
        Number of samples.

    Returns
    -------
    torch.Tensor
        New rows ``(k, d')``.
    """
    G = stats.G
    M = G.clone()
    diag = M.diagonal(dim1=1, dim2=2)
    diag.add_(diag.mean(dim=1, keepdim=True).add_(1e-300).mul_(1e-10))
    L, info = torch.linalg.cholesky_ex(M)
    cand = torch.cholesky_solve(stats.b.unsqueeze(2), L).squeeze(2)
    if info.any():
        lst = torch.linalg.lstsq(M, stats.b.unsqueeze(2)).solution.squeeze(2)
        cand = torch.where((info != 0)[:, None], lst, cand)
    finite = torch.isfinite(cand).all(dim=1)
    ok = finite & (stats.mass > 1e-12 * n)
    # rows that are not finite are refused already; their change is computed at A_old
    safe = cand if bool(finite.all()) else torch.where(finite[:, None], cand, A_old)
    ok &= stats.sse_change(safe, A_old) <= 0
    return torch.where(ok[:, None], cand, A_old)
