"""The exact M-step of a softmax gate: soft-label multinomial logistic regression.

Given responsibilities ``R`` (``n x k``, rows summing to one) and inputs ``X`` (``n x d``), the gate
M-step of EM maximises the ridge-penalised, averaged expected complete-data log-likelihood

.. math::

    J(W) = \\frac{1}{n} \\sum_n \\sum_i R_{ni} \\log \\mathrm{softmax}(W x_n)_i
           - \\frac{\\lambda}{2} \\lVert W \\rVert_F^2

over ``W`` with its last row fixed at zero. ``J`` is strongly concave in the free rows thanks to
the ridge ``lambda``, so a damped Newton method with an Armijo line search converges globally,
and every accepted step increases ``J`` (which keeps EM monotone).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["fit_softmax_gate", "gate_objective"]

_ARMIJO = 1e-4
_MAX_HALVINGS = 40


def gate_objective(X: torch.Tensor, R: torch.Tensor, W: torch.Tensor, ridge: float) -> torch.Tensor:
    """The penalised gate objective ``J(W)`` (a scalar tensor).

    Parameters
    ----------
    X
        Inputs, shape ``(n, d)``.
    R
        Soft labels (responsibilities), shape ``(n, k)``.
    W
        Gate weights, shape ``(k, d)``.
    ridge
        Coefficient ``lambda`` of the penalty ``lambda / 2 * ||W||_F^2``.

    Returns
    -------
    torch.Tensor
        ``J(W)``, a 0-d tensor.
    """
    logp = torch.log_softmax(X @ W.T, dim=1)
    # 0 * log(0) must count as 0 (a hard label with a saturated gate).
    ll = torch.where(R > 0, R * logp, torch.zeros_like(logp)).sum() / X.shape[0]
    return ll - 0.5 * ridge * (W * W).sum()


def _newton_system(
    X: torch.Tensor, R: torch.Tensor, V: torch.Tensor, ridge: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of ``J`` in the free rows ``V`` and the negated Hessian (positive definite).

    Returns ``(G, M, P)`` with ``G`` of shape ``(k-1, d)``, ``M`` of shape ``((k-1) d, (k-1) d)``
    in row-major order of ``V``, and the gate probabilities ``P`` (``n x k``).
    """
    n, d = X.shape
    km1 = V.shape[0]
    W = torch.cat([V, V.new_zeros(1, d)], dim=0)
    P = torch.softmax(X @ W.T, dim=1)
    s = R.sum(dim=1)  # 1 for proper responsibilities; kept general for weighted samples
    G = (R[:, :km1] - P[:, :km1] * s[:, None]).T @ X / n - ridge * V
    # -Hessian = (1/n) sum_n s_n (diag(p) - p p^T) (x) x x^T  + ridge I, on the free block.
    Ps = P[:, :km1] * s[:, None]
    Z = (P[:, :km1] * s.clamp_min(0).sqrt()[:, None])[:, :, None] * X[:, None, :]
    Z = Z.reshape(n, km1 * d)
    M = -(Z.T @ Z)
    for a in range(km1):
        sl = slice(a * d, (a + 1) * d)
        M[sl, sl] += X.T @ (Ps[:, a : a + 1] * X)
    M /= n
    M.diagonal().add_(ridge)
    return G, M, P


def _solve_pd(M: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Solve ``M x = g`` for a (numerically) positive definite ``M``."""
    L, info = torch.linalg.cholesky_ex(M)
    if int(info) == 0:
        return torch.cholesky_solve(g[:, None], L)[:, 0]
    # Rounding made M indefinite (tiny ridge, saturated gate): add a little more ridge.
    scale = M.diagonal().abs().max().clamp_min(torch.finfo(M.dtype).tiny)
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    jitter = scale * torch.finfo(M.dtype).eps * 10
    for _ in range(20):
        L, info = torch.linalg.cholesky_ex(M + jitter * eye)
        if int(info) == 0:
            return torch.cholesky_solve(g[:, None], L)[:, 0]
        jitter = jitter * 10
    return torch.linalg.lstsq(M, g[:, None]).solution[:, 0]


def fit_softmax_gate(
    X: torch.Tensor,
    R: torch.Tensor,
    W0: torch.Tensor,
    *,
    ridge: float = 1e-6,
    max_steps: int = 20,
    tol: float = 1e-10,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Maximise the soft-label softmax-regression objective ``J`` by damped Newton.

    Parameters
    ----------
    X
        Gate inputs, shape ``(n, d)`` (including an intercept column if the model uses one).
    R
        Soft labels, shape ``(n, k)``; rows normally sum to one (EM responsibilities).
    W0
        Starting point, shape ``(k, d)``; its last row is ignored (the result's is zero).
    ridge
        Coefficient of ``ridge / 2 * ||W||_F^2``; must be positive to keep the problem strongly
        concave (and the result finite) when ``R`` is separable.
    max_steps
        Maximum number of Newton steps.
    tol
        Stop when half the squared Newton decrement, the predicted increase of ``J``, is below
        ``tol``.

    Returns
    -------
    W : torch.Tensor
        The maximiser, shape ``(k, d)``, last row zero.
    info : dict
        ``steps`` (accepted Newton steps), ``J`` (final objective), ``J0`` (initial objective),
        ``converged`` (whether the decrement criterion was met).

    Notes
    -----
    The negated Hessian of the free ``(k-1) d`` block is assembled as
    ``blockdiag(X^T diag(p_a) X) - Z^T Z`` with ``Z = [p_1 X, ..., p_{k-1} X]`` (scaled by
    ``1/n``) plus ``ridge * I`` and factorised by Cholesky. Steps are backtracked until the Armijo
    condition holds; a step that would not increase ``J`` is never taken.
    """
    if ridge <= 0:
        raise ValueError(f"ridge must be positive (got {ridge}); it keeps the gate M-step finite")
    n, d = X.shape
    k = R.shape[1]
    if W0.shape != (k, d):
        raise ValueError(f"W0 has shape {tuple(W0.shape)}, expected {(k, d)}")
    V = W0[:-1].detach().clone()
    zero_row = X.new_zeros(1, d)

    def objective(V_: torch.Tensor) -> float:
        return float(gate_objective(X, R, torch.cat([V_, zero_row], dim=0), ridge))

    J = objective(V)
    J0 = J
    steps = 0
    converged = k == 1
    while not converged and steps < max_steps:
        G, M, _ = _newton_system(X, R, V, ridge)
        g = G.reshape(-1)
        delta = _solve_pd(M, g)
        slope = float(g @ delta)  # directional derivative; > 0 for an ascent direction
        if not (slope > 0) or slope / 2 <= tol:
            converged = slope / 2 <= tol  # False for NaN: report it as not converged
            break
        D = delta.reshape(V.shape)
        t = 1.0
        accepted = False
        for _ in range(_MAX_HALVINGS):
            V_new = V + t * D
            J_new = objective(V_new)
            if J_new >= J + _ARMIJO * t * slope:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            # Rounding dominates the predicted increase: we are at the optimum for this precision.
            converged = True
            break
        V, J = V_new, J_new
        steps += 1
    W = torch.cat([V, zero_row], dim=0)
    return W, {"steps": steps, "J": J, "J0": J0, "converged": bool(converged)}
