"""Makkuva et al. (2019), Section 4.1: Regressor Fit (eq. 11) and Gating Fit (eq. 12).

Both are absolute cosines between estimated and true parameter vectors ("we assume that all the
parameters are unit-normalized"), so 1 is perfect and the sign of a vector is not penalised.
The paper states them for ``k = 2``; the generalisations to any ``k`` are documented per metric.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from moebench import EvalContext, Metric, hookimpl

__all__ = ["GatingFit", "RegressorFit", "abs_cosines", "bottleneck_assignment"]


def abs_cosines(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``|cos(u_i, v_j)|`` for the rows of ``U`` ``(m, d)`` and ``V`` ``(m', d)``.

    A zero row has cosine 0 with everything.
    """
    nu = np.linalg.norm(U, axis=1, keepdims=True)
    nv = np.linalg.norm(V, axis=1, keepdims=True)
    Un = np.divide(U, nu, out=np.zeros_like(U), where=nu > 0)
    Vn = np.divide(V, nv, out=np.zeros_like(V), where=nv > 0)
    return np.abs(Un @ Vn.T)


def bottleneck_assignment(C: np.ndarray) -> tuple[float, np.ndarray]:
    """``max_pi min_i C[pi(i), i]`` over permutations, and a maximising permutation.

    Exact for any size: binary search over the distinct entries for the largest threshold that
    admits a perfect matching on entries ``>= threshold`` (checked with the Hungarian algorithm);
    among the optimal permutations, the one with the largest sum of ``C[pi(i), i]`` is returned.

    Parameters
    ----------
    C
        Square score matrix, ``C[j, i]`` = score of estimated item ``j`` for true item ``i``.

    Returns
    -------
    value : float
        The bottleneck value.
    perm : numpy.ndarray
        ``perm[i]`` = estimated index matched to true index ``i``.
    """
    k = C.shape[0]
    values = np.unique(C)
    lo, hi = 0, len(values) - 1  # values[lo] is always feasible (the minimum entry)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        blocked = (C < values[mid]).astype(float)
        rows, cols = linear_sum_assignment(blocked)
        if blocked[rows, cols].sum() == 0:
            lo = mid
        else:
            hi = mid - 1
    threshold = values[lo]
    cost = np.where(C >= threshold, -C, k * (np.abs(C).max() + 1.0) + 1.0)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(k, dtype=np.int64)
    perm[cols] = rows
    return float(threshold), perm


def _arrays(ctx: EvalContext) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def arr(t: torch.Tensor) -> np.ndarray:
        return torch.as_tensor(t).detach().to("cpu", torch.float64).numpy()

    assert ctx.truth is not None
    return arr(ctx.params["A"]), arr(ctx.params["W"]), arr(ctx.truth["A"]), arr(ctx.truth["W"])


def _has_layout(ctx: EvalContext) -> bool:
    if ctx.truth is None:
        return False
    for name in ("A", "W"):
        if name not in ctx.params or name not in ctx.truth:
            return False
        if tuple(ctx.params[name].shape) != tuple(torch.as_tensor(ctx.truth[name]).shape):
            return False
    return ctx.params["A"].ndim == 2


def _regressor_fit(ctx: EvalContext) -> tuple[float, np.ndarray]:
    A, _, A_t, _ = _arrays(ctx)
    return bottleneck_assignment(abs_cosines(A, A_t))


class RegressorFit(Metric):
    """Makkuva et al. eq. 11: ``max_pi min_i |<a_pi(i), a_i*>|`` for unit-normalised regressors.

    The permutation ranges over all ``k!`` matchings of estimated to true experts (the paper
    writes it for ``k = 2``; the max-min form is the same for any ``k``) and is computed exactly
    by a bottleneck assignment. Rows are normalised to unit norm first, as the paper assumes.
    """

    name = "regressor_fit"
    summary = "Makkuva et al. eq. 11: max over expert permutations of min_i |cos(a_pi(i), a_i*)|"
    direction = "max"
    requires_truth = True
    tasks = ("regression",)

    def applies_to(self, ctx: EvalContext) -> bool:
        """Regression families with ``A`` and ``W`` in the truth's layout."""
        return super().applies_to(ctx) and _has_layout(ctx)

    def compute(self, ctx: EvalContext) -> float:
        """The regressor fit in ``[0, 1]``."""
        return ctx.cached("makkuva_regressor_fit", lambda: _regressor_fit(ctx))[0]


class GatingFit(Metric):
    """Makkuva et al. eq. 12: ``|<w, w*>|`` for the unit-normalised gate vector (``k = 2``).

    For ``k = 2`` with ``w_2 = 0`` the gate is the single vector ``w = w_1 - w_2``. For general
    ``k`` the natural reading is used: experts are matched by the permutation ``pi`` of eq. 11
    (ties broken by the largest total ``|cos|``), both gates are re-referenced to the expert
    matched to the true last one (softmax is invariant to a common shift), and the fit is
    ``min_{i < k} |cos(w_pi(i) - w_pi(k), w_i* - w_k*)|`` (the min mirrors eq. 11). For ``k = 2``
    this is exactly eq. 12, whichever way the experts are matched. It is NaN when a true gate
    vector is zero (direction undefined) and 1 for ``k = 1``.
    """

    name = "gating_fit"
    summary = "Makkuva et al. eq. 12: |cos(w, w*)| of the gate vectors, experts matched by eq. 11"
    direction = "max"
    requires_truth = True
    tasks = ("regression",)

    def applies_to(self, ctx: EvalContext) -> bool:
        """Regression families with ``A`` and ``W`` in the truth's layout."""
        return super().applies_to(ctx) and _has_layout(ctx)

    def compute(self, ctx: EvalContext) -> float:
        """The gating fit in ``[0, 1]``."""
        _, perm = ctx.cached("makkuva_regressor_fit", lambda: _regressor_fit(ctx))
        _, W, _, W_t = _arrays(ctx)
        k = W.shape[0]
        if k == 1:
            return 1.0
        Wp = W[perm]
        G = (Wp - Wp[-1])[:-1]
        G_t = (W_t - W_t[-1])[:-1]
        if np.any(np.linalg.norm(G_t, axis=1) == 0):
            return float("nan")
        return float(np.min(np.diag(abs_cosines(G, G_t))))


@hookimpl
def register_metrics(register: Callable[[type], None]) -> None:
    """Register :class:`RegressorFit` and :class:`GatingFit`."""
    register(RegressorFit)
    register(GatingFit)
