"""The exact M-step of a softmax gate: soft-label multinomial logistic regression.

Given responsibilities ``R`` (``n x k``, rows summing to one) and inputs ``X`` (``n x d``), the gate
M-step of EM maximises the ridge-penalised, averaged expected complete-data log-likelihood

.. math::

    J(W) = \\frac{1}{n} \\sum_n \\sum_i R_{ni} \\log \\mathrm{softmax}(W x_n)_i
           - \\frac{\\lambda}{2} \\lVert W \\rVert_F^2

over ``W`` with its last row fixed at zero. ``J`` is strongly concave in the free rows thanks to
the ridge ``lambda``, so a damped Newton method with an Armijo line search converges globally,
and every accepted step increases ``J`` (which keeps EM monotone).

With a ``radius`` the maximisation is restricted to the feasible set ``||w_i|| <= radius`` of the
free rows (the projection of Makkuva et al.; "projected" mirror descent of Fruytier et al.). Then
``lambda = 0`` is allowed: ``J`` is concave and the ball keeps the maximiser finite. Each step is a
projected Newton step: the quadratic model of ``J`` is maximised over the product of balls (a
trust-region-like subproblem solved through its per-row Lagrange multipliers), and the segment
from the current point to that maximiser, feasible by convexity, is backtracked until the Armijo
condition holds.
"""

from __future__ import annotations

from typing import Any

import torch

from .kernels import DEFAULT_CHUNK_SIZE, GateStats, LabelFn, RowChunks, cached_row_chunks, gate_pass

__all__ = ["DEFAULT_TOL", "fit_gate_chunked", "fit_softmax_gate", "gate_objective", "project_rows"]

_ARMIJO = 1e-4
_MAX_HALVINGS = 40
#: Default stopping threshold on the predicted increase of ``J``. A mirror step of size ``eta``
#: moves the soft labels by ``O(eta)``, so its predicted increase is ``O(eta^2)``: callers scale
#: the threshold by ``eta^2``.
DEFAULT_TOL = 1e-10
#: Lazy Hessians: a point is taken as converged without its Hessian when the predicted increase
#: estimated with the previous Hessian is below ``tol / _LAZY_MARGIN``.
_LAZY_MARGIN = 4.0
#: Whether :func:`fit_gate_chunked` skips Hessians lazily (the tests switch it off to compare).
LAZY_HESSIAN = True


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


def project_rows(V: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of each row of ``V`` onto the ball ``||v|| <= radius``."""
    norms = V.norm(dim=1, keepdim=True)
    scale = torch.where(norms > radius, radius / norms.clamp_min(1e-300), torch.ones_like(norms))
    return V * scale


def _ball_qp(
    M: torch.Tensor, b: torch.Tensor, km1: int, radius: float, *, sweeps: int = 50
) -> torch.Tensor:
    """Maximise ``b^T u - u^T M u / 2`` subject to ``||u_a|| <= radius`` for each row ``u_a``.

    ``u`` is flattened row-major (``km1`` rows of length ``d``). The KKT conditions give
    ``u(mu) = (M + diag(mu) (x) I_d)^{-1} b`` with multipliers ``mu >= 0`` and complementary
    slackness. The multipliers are found by cyclic coordinate minimisation of the (convex) dual:
    with the other multipliers fixed, ``u_a(mu_a) = (S + mu_a I)^{-1} c`` for a Schur complement
    ``S``, so ``1 / ||u_a(mu_a)||`` is concave and increasing and Newton's method on
    ``1 / ||u_a|| = 1 / radius`` from the left converges monotonically (More and Sorensen's
    secular equation). Rows are finally scaled into the ball to remove rounding.
    """
    d = b.shape[0] // km1
    eye_d = torch.eye(d, dtype=M.dtype, device=M.device)

    def factor(mu: torch.Tensor) -> torch.Tensor:
        A = M + torch.kron(torch.diag(mu), eye_d)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:  # rounding with a singular M: a little jitter
            scale = A.diagonal().abs().max().clamp_min(torch.finfo(A.dtype).tiny)
            L = torch.linalg.cholesky(A + scale * 1e-12 * torch.eye(A.shape[0], dtype=A.dtype))
        return L

    mu = M.new_zeros(km1)
    tol = 1e-12
    for _ in range(sweeps):
        largest_change = 0.0
        for a in range(km1):
            mu_a = mu.clone()
            mu_a[a] = 0.0
            for _ in range(100):
                L = factor(mu_a)
                U = torch.cholesky_solve(b[:, None], L)[:, 0].reshape(km1, d)
                norm = float(U[a].norm())
                if norm <= radius * (1 + tol):
                    break  # feasible: mu_a[a] = 0 if first iteration, else converged from the left
                rhs = torch.zeros_like(U)
                rhs[a] = U[a]
                Z = torch.cholesky_solve(rhs.reshape(-1, 1), L)[:, 0].reshape(km1, d)
                slope = float(U[a] @ Z[a]) / norm**3  # d(1/||u_a||)/d mu_a > 0
                if not slope > 0:
                    break
                step = (1.0 / radius - 1.0 / norm) / slope
                mu_a[a] = mu_a[a] + step
                if step <= tol * float(mu_a[a]):
                    break
            largest_change = max(largest_change, abs(float(mu_a[a] - mu[a])) / (1 + float(mu_a[a])))
            mu = mu_a
        if largest_change <= tol or km1 == 1:
            break
    U = torch.cholesky_solve(b[:, None], factor(mu))[:, 0].reshape(km1, d)
    return project_rows(U, radius).reshape(-1)


def _factor_pd(M: torch.Tensor) -> torch.Tensor | None:
    """The Cholesky factor of a (numerically) positive definite ``M``, adding a little ridge where
    rounding made it indefinite (tiny ridge, saturated gate); ``None`` if that fails too."""
    L, info = torch.linalg.cholesky_ex(M)
    if not info:
        return L
    scale = M.diagonal().abs().max().clamp_min(torch.finfo(M.dtype).tiny)
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    jitter = scale * torch.finfo(M.dtype).eps * 10
    for _ in range(20):
        L, info = torch.linalg.cholesky_ex(M + jitter * eye)
        if not info:
            return L
        jitter = jitter * 10
    return None


def _solve_pd(M: torch.Tensor, g: torch.Tensor,
              L: torch.Tensor | None = None) -> torch.Tensor:
    """Solve ``M x = g`` for a (numerically) positive definite ``M`` (``L``: its factor)."""
    if L is None:
        L = _factor_pd(M)
    if L is None:
        return torch.linalg.lstsq(M, g[:, None]).solution[:, 0]
    return torch.cholesky_solve(g[:, None], L)[:, 0]


def fit_softmax_gate(
    X: torch.Tensor,
    R: torch.Tensor,
    W0: torch.Tensor,
    *,
    ridge: float = 1e-6,
    max_steps: int = 20,
    tol: float = DEFAULT_TOL,
    radius: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
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
        concave (and the result finite) when ``R`` is separable, unless ``radius`` is set, in
        which case ``ridge = 0`` is allowed.
    max_steps
        Maximum number of Newton steps.
    tol
        Stop when the predicted increase of ``J`` (half the squared Newton decrement; with a
        radius, the increase of the quadratic model over the balls) is below ``tol``.
    radius
        If set, maximise over the feasible set ``||w_i|| <= radius`` of the free rows. ``W0`` is
        first projected onto it; every accepted step stays feasible and increases ``J``.
    chunk_size
        Rows per chunk of the passes over the data (:mod:`~moebench_plugins.models.kernels`).

    Returns
    -------
    W : torch.Tensor
        The maximiser, shape ``(k, d)``, last row zero.
    info : dict
        ``steps`` (accepted Newton steps), ``J`` (final objective), ``J0`` (initial objective),
        ``converged`` (whether the decrement criterion was met), ``projected_start`` (whether
        ``W0`` had to be projected onto the feasible set), ``neg_hessian`` (the unpenalised
        negated Hessian sum at the result, as in
        :class:`~moebench_plugins.models.kernels.GateStats`, when the solve computed it there,
        else ``None``).

    Notes
    -----
    The negated Hessian of the free ``(k-1) d`` block,
    ``(1/n) sum_n s_n (diag(p_n) - p_n p_n^T) (x) x_n x_n^T + ridge I``, is accumulated chunk by
    chunk as ``k (k - 1) / 2`` weighted Grams, one
    :func:`~moebench_plugins.models.native.weighted_sums` call per chunk
    (:func:`~moebench_plugins.models.kernels.gate_pass`), and factorised by Cholesky. Steps are
    backtracked until the Armijo condition holds; a step that would not increase ``J`` is never
    taken. The pass that evaluates a full step also accumulates the Newton system there, so an
    accepted full step costs one pass. Where Newton's quadratic convergence predicts that a full
    step ends the solve, that pass computes only the objective and the gradient ("lazy
    Hessian"): the point counts as converged when the predicted increase estimated with the
    previous Hessian is below ``tol / 4``, and otherwise its Hessian is computed by one more
    pass; the Hessian that only confirmed convergence is thereby skipped.

    With a radius, the direction is ``U - V`` where ``U`` maximises the quadratic model
    ``g^T (U - V) - (U - V)^T M (U - V) / 2`` over the balls; it equals the Newton step when the
    Newton point is feasible, and is an ascent direction
    (``g^T (U - V) >= (U - V)^T M (U - V) / 2``) whose segment stays feasible by convexity.
    """
    n, d = X.shape
    k = R.shape[1]
    if R.shape[0] != n:
        raise ValueError(f"R has {R.shape[0]} rows, X has {n}")
    chunks = cached_row_chunks(X, None, chunk_size=chunk_size)
    return fit_gate_chunked(
        chunks, R, W0, ridge=ridge, max_steps=max_steps, tol=tol, radius=radius, n_labels=k
    )


def fit_gate_chunked(
    chunks: RowChunks,
    labels: torch.Tensor | LabelFn,
    W0: torch.Tensor,
    *,
    ridge: float = 1e-6,
    max_steps: int = 20,
    tol: float = DEFAULT_TOL,
    radius: float | None = None,
    n_labels: int | None = None,
    first: GateStats | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """:func:`fit_softmax_gate` on chunked (possibly streamed) gate inputs.

    Parameters
    ----------
    chunks
        The gate inputs (with the intercept row if any); their targets are unused.
    labels
        Soft labels ``(n, k)`` or a :data:`~moebench_plugins.models.kernels.LabelFn`
        recomputing them chunk by chunk.
    W0
        Starting point ``(k, d')``.
    ridge, max_steps, tol, radius
        As in :func:`fit_softmax_gate`.
    n_labels
        ``k`` (checked against ``W0``); default ``W0.shape[0]``.
    first
        The gate statistics at ``W0`` with these labels and the Newton system, if a fused pass
        already computed them (used unless ``W0`` had to be projected).

    Returns
    -------
    tuple
        ``(W, info)`` as :func:`fit_softmax_gate`.
    """
    _check_ridge_and_radius(ridge, radius)
    n, d = chunks.n_rows, chunks.n_features
    k = n_labels if n_labels is not None else W0.shape[0]
    if W0.shape != (k, d):
        raise ValueError(f"W0 has shape {tuple(W0.shape)}, expected {(k, d)}")
    W, projected_start = _feasible_start(chunks, W0, radius)
    objective = _GateObjective(chunks, labels, ridge)
    if first is not None and not projected_start and first.neg_hessian is not None:
        st = first
        J = first.q / n - objective.penalty(W)
    else:
        J, st = objective(W, k > 1)
    J0 = J
    steps = 0
    converged = k == 1
    L_prev: torch.Tensor | None = None  # the factor of the previous step's Newton matrix
    while not converged and steps < max_steps:
        if st.neg_hessian is None:
            if _lazily_converged(st, W, L_prev, n, ridge, tol):
                converged = True
                break
            J, st = objective(W, True)
        delta, slope, gain, L = _ascent_direction(st, W, n, ridge, radius)
        if not (slope > 0) or gain <= tol:
            converged = gain <= tol  # False for NaN: report it as not converged
            break
        # Newton converges quadratically (the next predicted increase is about gain^2): when
        # that says the full step will end the solve, its pass skips the Hessian.
        hessian = not LAZY_HESSIAN or radius is not None or gain * gain > tol / _LAZY_MARGIN
        D = torch.cat([delta.reshape(k - 1, d), delta.new_zeros(1, d)])
        found = _armijo_search(objective, W, D, J, slope, steps + 1 < max_steps, hessian)
        if found is None:
            # Rounding dominates the predicted increase: we are at the optimum for this precision.
            converged = True
            break
        W, J, st = found
        L_prev = L
        steps += 1
    info = {"steps": steps, "J": J, "J0": J0, "converged": bool(converged),
            "projected_start": projected_start, "neg_hessian": st.neg_hessian}
    return W, info


def _check_ridge_and_radius(ridge: float, radius: float | None) -> None:
    """Reject a gate solve that could diverge (no ridge and no ball) or an empty ball."""
    if ridge < 0 or (ridge == 0 and radius is None):
        raise ValueError(
            f"ridge must be positive (got {ridge}), or zero with a radius; it keeps the gate "
            "M-step finite (set gate_ridge > 0 or gate_radius)"
        )
    if radius is not None and not radius > 0:
        raise ValueError(f"radius must be positive (got {radius})")


def _feasible_start(
    chunks: RowChunks, W0: torch.Tensor, radius: float | None
) -> tuple[torch.Tensor, bool]:
    """The full gate ``W`` to start from (a copy of ``W0`` on the data's device and dtype, last
    row zero, free rows projected onto the balls) and whether the projection moved it.

    The free rows ``W[:-1]`` are a view of ``W``: trial points are ``W + t D``.
    """
    k = W0.shape[0]
    W = W0.detach().to(chunks.device, chunks.dtype).clone()
    W[-1] = 0
    V = W[:-1]
    projected_start = False
    if radius is not None and k > 1:
        P0 = project_rows(V, radius)
        projected_start = not torch.equal(P0, V)
        V.copy_(P0)
    return W, projected_start


class _GateObjective:
    """The penalised gate objective ``J(W) = q(W) / n - ridge / 2 ||W||^2`` of ``labels`` on
    ``chunks``, with the gate statistics of the pass that computed it (:func:`gate_pass`)."""

    def __init__(self, chunks: RowChunks, labels: torch.Tensor | LabelFn, ridge: float):
        self.chunks, self.labels, self.ridge = chunks, labels, ridge
        self.n = chunks.n_rows

    def penalty(self, W: torch.Tensor) -> float:
        """``ridge / 2 ||W||_F^2``."""
        v = W.reshape(-1)
        return 0.5 * self.ridge * float(torch.dot(v, v))

    def __call__(self, W: torch.Tensor, system: bool, hessian: bool = True
                 ) -> tuple[float, GateStats]:
        """``J(W)`` and the pass's statistics (with the Newton system if ``system``)."""
        st = gate_pass(self.chunks, self.labels, W, system=system, hessian=hessian)
        return st.q / self.n - self.penalty(W), st


def _lazily_converged(st: GateStats, W: torch.Tensor, L_prev: torch.Tensor | None, n: int,
                      ridge: float, tol: float) -> bool:
    """Lazy Hessian: whether the predicted increase ``g' M^-1 g / 2`` at ``W``, estimated with
    the previous step's factor ``L_prev`` of ``M``, is below ``tol / _LAZY_MARGIN``."""
    if st.grad is None or L_prev is None:
        return False
    g = torch.add(st.grad / n, W[:-1], alpha=-ridge).reshape(-1, 1)
    h = torch.linalg.solve_triangular(L_prev, g, upper=False)
    estimate = float(torch.dot(h[:, 0], h[:, 0])) / 2
    return estimate <= tol / _LAZY_MARGIN


def _ascent_direction(
    st: GateStats, W: torch.Tensor, n: int, ridge: float, radius: float | None
) -> tuple[torch.Tensor, float, float, torch.Tensor | None]:
    """The step of the free rows from the Newton system at ``W``: ``(delta, slope, gain, L)``.

    Without a radius the Newton step (``L``: the factor of its matrix, ``gain``: half the
    squared decrement); with one, the maximiser of the quadratic model over the balls minus the
    current point (``L`` is ``None``, ``gain`` the model's increase). ``slope`` is the
    directional derivative of ``J`` along ``delta`` (> 0 for ascent).
    """
    g = torch.add(st.grad / n, W[:-1], alpha=-ridge).reshape(-1)
    M = st.neg_hessian / n
    M.diagonal().add_(ridge)
    L = None
    if radius is None:
        L = _factor_pd(M)
        delta = _solve_pd(M, g, L)
        slope = float(torch.dot(g, delta))  # directional derivative; > 0 for ascent
        gain = slope / 2
    else:
        v = W[:-1].reshape(-1)
        delta = _ball_qp(M, M @ v + g, W.shape[0] - 1, radius) - v
        slope = float(g @ delta)
        gain = slope - 0.5 * float(delta @ (M @ delta))  # predicted increase of the model
    return delta, slope, gain, L


def _armijo_search(
    objective: _GateObjective, W: torch.Tensor, D: torch.Tensor, J: float, slope: float,
    more_steps: bool, hessian: bool,
) -> tuple[torch.Tensor, float, GateStats] | None:
    """Backtrack ``W + t D`` from ``t = 1`` until the Armijo condition holds: the accepted
    ``(W, J, stats)``, or ``None`` after :data:`_MAX_HALVINGS` halvings.

    The pass at the full step also computes the Newton system there when ``more_steps`` (another
    step may follow), without the Hessian unless ``hessian``.
    """
    t = 1.0
    for _ in range(_MAX_HALVINGS):
        W_new = torch.add(W, D, alpha=t)
        # The Newton system at the trial point is only needed when another step follows.
        J_new, st_new = objective(W_new, t == 1.0 and more_steps, hessian)
        if J_new >= J + _ARMIJO * t * slope:
            return W_new, J_new, st_new
        t *= 0.5
    return None
