"""Moment transforms and the landscape loss ``L_4`` of landscape-gd (Makkuva, Oh, Kannan &
Viswanath, AISTATS 2020, as reconstructed in ``NOTES-makkuva-2020.md``; not the authors' code).

For ``x ~ N(0, I_d)``, ``y = g(a_Z . x) + sigma N(0, 1)`` with ``P(Z = i | x) = softmax(W x)_i``
and gate vectors orthogonal to the experts, the output transforms

.. math::

    P_4(y) = y^4 + \\alpha_3 y^3 + \\alpha_2 y^2 + \\alpha_1 y, \\qquad P_2(y) = y^2 + \\beta_1 y

are chosen so that ``phi_m(z) = E[P_m(g(z) + sigma N)]`` has zero Hermite coefficients of
orders ``1 .. m-1`` (notes, section 3.1). Then, with the Hermite score tensors ``S_4``, ``S_2``
of the standard Gaussian,

.. math::

    E[P_4(y) S_4(x)] / c_4 = \\sum_i q_i a_i^{\\otimes 4}, \\qquad
    E[P_2(y) S_2(x)] / c_2 = \\sum_i q_i a_i^{\\otimes 2}, \\qquad q_i = E[\\mathrm{softmax}_i(Wx)],

with ``c_4 = E[phi_4 He_4]`` and ``c_2 = E[phi_2 He_2]``. Only contracted forms of ``S_4`` and
``S_2`` are ever evaluated (``O(n k d)`` per loss), never a ``d^4`` tensor.

The coefficients are solved by quadrature: the default rule is the composite Gauss-Legendre rule
of :func:`~moebench_plugins.models.spectral.gaussian_expectation` (exact across the ReLU kink);
``rule="gauss-hermite"`` is the notes' 80-node Gauss-Hermite rule, which converges only
algebraically across the kink: for ReLU at ``sigma = 0.5`` it gives ``alpha_1 = 0.809`` and
``c_4 = 0.524`` (the notes' table) where the exact values are ``0.723`` and ``0.501``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import torch
from numpy.polynomial.hermite_e import hermegauss

from ..models.kernels import activate
from ..models.spectral import gaussian_expectation

__all__ = [
    "LandscapeTransform",
    "QuadratureRule",
    "landscape_loss",
    "landscape_transform",
    "s2_aa",
    "s4_aabb",
]

QuadratureRule = Literal["composite", "gauss-hermite"]

#: Nodes of the notes' Gauss-Hermite rule (``rule="gauss-hermite"``).
GAUSS_HERMITE_NODES = 80


class LandscapeTransform(NamedTuple):
    """Coefficients of ``P_4(y) = y^4 + alpha3 y^3 + alpha2 y^2 + alpha1 y`` and
    ``P_2(y) = y^2 + beta1 y``, and the constants ``c4 = E[phi_4 He_4]``, ``c2 = E[phi_2 He_2]``."""

    alpha1: float
    alpha2: float
    alpha3: float
    c4: float
    beta1: float
    c2: float

    def p4(self, y: torch.Tensor) -> torch.Tensor:
        """The quartic transform ``P_4(y)``."""
        return y * (self.alpha1 + y * (self.alpha2 + y * (self.alpha3 + y)))

    def p2(self, y: torch.Tensor) -> torch.Tensor:
        """The quadratic transform ``P_2(y)``."""
        return y * (y + self.beta1)


def _expectation(rule: QuadratureRule) -> Callable[[Callable[[np.ndarray], np.ndarray]], float]:
    """``f -> E[f(Z)]``, ``Z ~ N(0, 1)``, by the quadrature ``rule``."""
    if rule == "gauss-hermite":
        z, w = hermegauss(GAUSS_HERMITE_NODES)
        w = w / w.sum()
        return lambda f: float(w @ f(z))
    if rule == "composite":
        return lambda f: gaussian_expectation(lambda t: torch.from_numpy(f(t.numpy())))
    raise ValueError(f"unknown quadrature rule {rule!r} (composite or gauss-hermite)")


@functools.lru_cache(maxsize=64)
def landscape_transform(
    activation: str, sigma: float, rule: QuadratureRule = "composite"
) -> LandscapeTransform:
    """Stage 0: the transform coefficients for activation ``g`` and known noise ``sigma``.

    Solves ``E[phi_4 He_m] = 0`` for ``m = 1, 2, 3`` (a 3 x 3 linear system in the alphas) and
    ``E[phi_2 He_1] = 0`` (one equation in ``beta1``), with the conditional moments
    ``E[y^j | z]`` of ``y = g(z) + sigma N`` (notes, section 3.1). For linear ``g``:
    ``alpha2 = -6 (1 + sigma^2)``, ``c4 = 24``, the others 0, and ``c2 = 2``.

    Parameters
    ----------
    activation
        ``"linear"``, ``"sigmoid"`` or ``"relu"``.
    sigma
        Known noise standard deviation.
    rule
        Quadrature: ``composite`` (default, accurate to ~1e-14 for the three activations) or
        ``gauss-hermite`` (the notes' 80-node rule; inaccurate for ReLU, see the module).

    Returns
    -------
    LandscapeTransform
        The coefficients and constants.

    Raises
    ------
    ValueError
        When ``g`` is outside the admissible class (singular system, ``c4`` or ``c2`` ~ 0).
    """
    expect = _expectation(rule)
    s2 = sigma * sigma

    def g(z: np.ndarray) -> np.ndarray:
        return activate(torch.from_numpy(z), activation).numpy()

    def moment(j: int, z: np.ndarray) -> np.ndarray:  # E[y^j | z]
        m = g(z)
        return [np.ones_like(z), m, m * m + s2, m**3 + 3 * s2 * m,
                m**4 + 6 * s2 * m * m + 3 * s2 * s2][j]

    def hermite(r: int, z: np.ndarray) -> np.ndarray:
        return [np.ones_like(z), z, z * z - 1, z**3 - 3 * z, z**4 - 6 * z * z + 3][r]

    def cross(j: int, r: int) -> float:  # E[E[y^j | Z] He_r(Z)]
        return expect(lambda z: moment(j, z) * hermite(r, z))

    def solve(order: int) -> tuple[np.ndarray, float]:
        M = np.array([[cross(j, r) for j in range(1, order)] for r in range(1, order)])
        rhs = -np.array([cross(order, r) for r in range(1, order)])
        if abs(np.linalg.det(M)) <= 1e-12 * max(np.abs(M).max(), 1e-300) ** (order - 1):
            raise ValueError(f"activation {activation!r}: the order-{order} transform system is "
                             "singular (g is outside the admissible class)")
        coef = np.linalg.solve(M, rhs)
        c = cross(order, order) + sum(coef[j - 1] * cross(j, order) for j in range(1, order))
        return coef, float(c)

    (a1, a2, a3), c4 = solve(4)
    (b1,), c2 = solve(2)
    if abs(c4) < 1e-10 or abs(c2) < 1e-10:
        raise ValueError(f"activation {activation!r}: c4 = {c4:.3g}, c2 = {c2:.3g}; both must be "
                         "non-zero (g is outside the admissible class)")
    return LandscapeTransform(float(a1), float(a2), float(a3), c4, float(b1), c2)


def s4_aabb(p: torch.Tensor, r: torch.Tensor, na: torch.Tensor, nb: torch.Tensor,
            ab: torch.Tensor) -> torch.Tensor:
    """Contracted Hermite score tensor ``S_4(x)(a, a, b, b)``.

    Parameters
    ----------
    p, r
        Projections ``<x, a>`` and ``<x, b>`` (broadcastable).
    na, nb, ab
        ``||a||^2``, ``||b||^2`` and ``<a, b>``.

    Returns
    -------
    torch.Tensor
        ``p^2 r^2 - (p^2 nb + r^2 na + 4 p r ab) + na nb + 2 ab^2``.
    """
    return p * p * r * r - (p * p * nb + r * r * na + 4 * p * r * ab) + na * nb + 2 * ab * ab


def s2_aa(p: torch.Tensor, na: torch.Tensor) -> torch.Tensor:
    """Contracted Hermite score tensor ``S_2(x)(a, a) = <x, a>^2 - ||a||^2``."""
    return p * p - na


def landscape_loss(
    A: torch.Tensor, X: torch.Tensor, w4: torch.Tensor, w2: torch.Tensor,
    mu: float, lambda_: float, delta: float,
) -> torch.Tensor:
    """The empirical landscape loss ``L_4(A)`` (notes, section 3.2), differentiable in ``A``.

    .. math::

        L_4 = \\sum_{i \\ne j} \\hat E[Q_4](a_i, a_i, a_j, a_j)
              - \\mu \\sum_i \\hat E[Q_4](a_i, a_i, a_i, a_i)
              + \\lambda \\sum_i (\\hat E[Q_2](a_i, a_i) - 1)^2 + \\frac{\\delta}{2} \\lVert A
              \\rVert_F^2

    with ``Q_4 = w4 S_4(x)``, ``Q_2 = w2 S_2(x)``. All ``k x k`` contractions come from the
    projections ``P = X A^T`` in ``O(n k (d + k))``.

    Parameters
    ----------
    A
        Candidate experts as rows, shape ``(k, d)``.
    X
        Inputs ``(n, d)``.
    w4, w2
        Per-sample weights ``P_4(y) / c4`` and ``P_2(y) / c2`` (possibly centred), shape ``(n,)``.
    mu, lambda_, delta
        Weights of the diagonal reward, the scale penalty and the ridge.

    Returns
    -------
    torch.Tensor
        The scalar loss.
    """
    n = X.shape[0]
    P = X @ A.T
    P2 = P * P
    gram = A @ A.T
    norms = torch.diagonal(gram)
    m4 = P2.T @ (w4[:, None] * P2) / n  # mean w4 p_i^2 p_j^2
    m2 = P.T @ (w4[:, None] * P) / n  # mean w4 p_i p_j
    s = torch.diagonal(m2)
    m0 = w4.mean()
    T = (m4 - s[:, None] * norms[None, :] - norms[:, None] * s[None, :] - 4 * m2 * gram
         + m0 * (norms[:, None] * norms[None, :] + 2 * gram * gram))
    diag = torch.diagonal(T).sum()
    scale = (w2[:, None] * P2).mean(0) - w2.mean() * norms
    return (T.sum() - diag - mu * diag + lambda_ * (scale - 1).square().sum()
            + 0.5 * delta * A.square().sum())


class Whitening(NamedTuple):
    """The top-``k`` eigenpairs of ``M2 = E^[Q_2] = sum_i q_i a_i a_i^T`` as two maps.

    ``whiten`` (``d x k``, ``U diag(lam)^{-1/2}``) takes whitened directions ``u`` to input space
    (``a = whiten @ u``): the whitened experts ``b_i = sqrt(q_i) whiten^+ a_i`` are orthonormal,
    so ``E[Q_4](a, a, a', a') = sum_i <b_i, u>^2 <b_i, u'>^2 / q_i`` and ``E[Q_2](a, a) =
    ||u||^2``. ``unwhiten`` (``d x k``, ``U diag(lam)^{1/2}``) maps ``b_i`` to ``sqrt(q_i) a_i``.
    """

    whiten: torch.Tensor
    unwhiten: torch.Tensor
    basis: torch.Tensor


def second_moment_whitening(X: torch.Tensor, w2: torch.Tensor, k: int) -> Whitening:
    """Whitening by the empirical ``E[Q_2] = mean(w2 (x x^T - I))`` (not in the notes: the
    Ge-Lee-Ma-style step that makes the landscape of non-orthonormal experts that of
    orthonormal ones).

    Parameters
    ----------
    X
        Inputs ``(n, d)``.
    w2
        Per-sample weights ``P_2(y) / c2``, shape ``(n,)``.
    k
        Number of experts (the rank kept).

    Returns
    -------
    Whitening
        The maps; eigenvalues below ``1e-6`` times the largest are clamped there.
    """
    n, d = X.shape
    M2 = (X.T * w2) @ X / n - w2.mean() * torch.eye(d, dtype=X.dtype, device=X.device)
    lam, U = torch.linalg.eigh(M2)
    lam, U = lam[-k:], U[:, -k:]
    lam = lam.clamp_min(1e-6 * float(lam.abs().max()))
    return Whitening(U * lam.rsqrt(), U * lam.sqrt(), U)
