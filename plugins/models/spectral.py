"""Spectral kernels of Makkuva et al. (2019), Algorithm 1: regressors from cross-moment tensors.

For ``x ~ N(0, I_d)``, unit-norm regressors ``a_i`` and gate vectors orthogonal to their span, the
Cubic and Quadratic Transforms (CQT) ``P3(y) = y^3 + alpha y^2 + beta y`` and
``P2(y) = y^2 + gamma y`` make the cross moments with the score functions supersymmetric
(Makkuva et al., Theorem 1):

.. math::

    T_2 = E[P_2(y) S_2(x)] = c_2 \\sum_i \\pi_i a_i a_i^\\top, \\qquad
    T_3 = E[P_3(y) S_3(x)] = c_3 \\sum_i \\pi_i a_i^{\\otimes 3},

with ``pi_i = E[p_i(x)]``. ``T2`` whitens ``T3`` into a ``k x k x k`` orthogonally decomposable
tensor, which the tensor power method or Orth-ALS decomposes; un-whitening gives the ``a_i``.
The whitened third moment is accumulated over the data in chunks and never formed in ``d^3``.

Inputs need not be ``N(0, I)``: the score functions are pluggable (:class:`Score`), with the
standard Gaussian and Gaussian mixtures (Section 4.1 of the paper) implemented; for non-Gaussian
inputs the CQT cancellations hold only approximately, as in the paper's Table 1 experiment.
Everything runs in float64 on the device of the input tensors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np
import torch

from moebench.density import GaussianMixtureDensity

from .kernels import activate
from .native import Pairs, weighted_sums

__all__ = [
    "CQT",
    "GAUSSIAN_SCORE",
    "GaussianScore",
    "MixtureScore",
    "Score",
    "SpectralEstimate",
    "WhitenedMoments",
    "cqt_coefficients",
    "estimate_regressors",
    "gaussian_expectation",
    "moment_gate_k2",
    "orth_als",
    "score_for",
    "tensor_power_method",
    "unwhiten",
    "whitened_moments",
]

#: An expert non-linearity: a registered name or a callable on float64 tensors.
ActivationLike = str | Callable[[torch.Tensor], torch.Tensor]

# Composite Gauss-Legendre rule for E[f(Z)], Z ~ N(0, 1), on [-_Z_MAX, _Z_MAX]: panels of width
# _PANEL with _PANEL_NODES nodes each. Panel edges include 0, where the ReLU has its kink, so
# piecewise-smooth integrands are integrated to machine precision (a plain Gauss-Hermite rule
# converges only algebraically across a kink). The tail mass beyond 12 is about 1e-33.
_Z_MAX = 12.0
_PANEL = 0.25
_PANEL_NODES = 20


class CQT(NamedTuple):
    """Coefficients of the Cubic and Quadratic Transforms and the resulting tensor constants.

    ``P3(y) = y^3 + alpha y^2 + beta y`` and ``P2(y) = y^2 + gamma y``;
    ``T3 = c3 sum_i pi_i a_i^{(x)3}`` and ``T2 = c2 sum_i pi_i a_i a_i^T``.
    """

    alpha: float
    beta: float
    gamma: float
    c3: float
    c2: float

    def p3(self, y: torch.Tensor) -> torch.Tensor:
        """The cubic transform ``P3(y)``."""
        return y * (y * (y + self.alpha) + self.beta)

    def p2(self, y: torch.Tensor) -> torch.Tensor:
        """The quadratic transform ``P2(y)``."""
        return y * (y + self.gamma)


@functools.cache
def _gauss_nodes() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the composite rule for ``E[f(Z)]`` with ``Z ~ N(0, 1)``."""
    t, w = np.polynomial.legendre.leggauss(_PANEL_NODES)
    edges = np.arange(-_Z_MAX, _Z_MAX + 0.5 * _PANEL, _PANEL)
    lo, hi = edges[:-1, None], edges[1:, None]
    z = (0.5 * (hi - lo) * t + 0.5 * (hi + lo)).ravel()
    wz = (0.5 * (hi - lo) * w).ravel() * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z, wz


def gaussian_expectation(f: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """``E[f(Z)]`` for ``Z ~ N(0, 1)`` by composite Gauss-Legendre quadrature.

    Parameters
    ----------
    f
        Vectorised function of a float64 CPU tensor of nodes.

    Returns
    -------
    float
        The expectation (accurate to about 1e-14 for piecewise-smooth ``f`` of polynomial growth
        whose kinks lie on multiples of 0.25, such as the ReLU's at 0).
    """
    z, w = _gauss_nodes()
    values = f(torch.from_numpy(z)).to(torch.float64).cpu().numpy()
    return float(np.dot(w, values))


def _as_callable(activation: ActivationLike) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(activation, str):
        return functools.partial(activate, activation=activation)
    return activation


@functools.lru_cache(maxsize=256)
def _cqt_cached(activation: ActivationLike, sigma: float) -> CQT:
    g = _as_callable(activation)
    z, w = _gauss_nodes()
    Z = torch.from_numpy(z)
    G = g(Z).to(torch.float64).cpu().numpy()
    he1, he2, he3 = z, z * z - 1.0, z**3 - 3.0 * z  # Hermite polynomials: E[f He_m] = E[f^(m)]
    s2 = sigma * sigma

    def E(values: np.ndarray) -> float:
        return float(np.dot(w, values))

    # f3(t) = E_N[P3(g(t) + sigma N)] = g^3 + 3 s2 g + alpha (g^2 + s2) + beta g and
    # f2(t) = g^2 + s2 + gamma g. Theorem 1 needs E[f3'] = E[f3''] = E[f2'] = 0 (by Stein's
    # lemma E[f'] = E[f He1], E[f''] = E[f He2]); then c3 = E[f3'''] and c2 = E[f2''].
    M = np.array([[E(G * G * he1), E(G * he1)], [E(G * G * he2), E(G * he2)]])
    cubic = G**3 + 3.0 * s2 * G
    rhs = -np.array([E(cubic * he1), E(cubic * he2)])
    scale = np.abs(M).max()
    if not (scale > 0) or abs(np.linalg.det(M)) <= 1e-12 * scale * scale:
        raise ValueError(
            "the activation is not (alpha, beta, gamma)-valid: the CQT moment conditions "
            "E[f3'] = E[f3''] = 0 have no unique solution"
        )
    alpha, beta = np.linalg.solve(M, rhs)
    e_g_he1 = E(G * he1)
    if abs(e_g_he1) <= 1e-12 * max(1.0, float(np.abs(G * w).sum())):
        raise ValueError("the activation is not valid for the CQT: E[g'(Z)] = 0, no gamma exists")
    gamma = -E(G * G * he1) / e_g_he1
    f3 = cubic + alpha * (G * G + s2) + beta * G
    f2 = G * G + s2 + gamma * G
    c3, c2 = E(f3 * he3), E(f2 * he2)
    if abs(c3) < 1e-12 or abs(c2) < 1e-12:
        raise ValueError(
            f"the activation is not valid for the CQT: c3 = {c3:.3g}, c2 = {c2:.3g} (both must be "
            "non-zero)"
        )
    return CQT(float(alpha), float(beta), float(gamma), float(c3), float(c2))


def cqt_coefficients(activation: ActivationLike, sigma: float) -> CQT:
    """CQT coefficients ``(alpha, beta, gamma, c3, c2)`` for activation ``g`` and noise ``sigma``.

    Solves the moment conditions of Makkuva et al. (Theorem 1; their Appendix C system) with
    ``f3(t) = E[P3(g(t) + sigma N)]`` and ``f2(t) = E[P2(g(t) + sigma N)]``, ``N ~ N(0, 1)``:

    .. math::

        E[f_3'(Z)] = E[f_3''(Z)] = 0, \\quad E[f_2'(Z)] = 0, \\qquad
        c_3 = E[f_3'''(Z)], \\quad c_2 = E[f_2''(Z)],

    with the derivatives moved onto Hermite polynomials (Stein's lemma) and the expectations
    computed by quadrature, so any activation works. Results are cached per
    ``(activation, sigma)``. For linear ``g``: ``alpha = gamma = 0``, ``beta = -3 (1 + sigma^2)``,
    ``c3 = 6``, ``c2 = 2``.

    Parameters
    ----------
    activation
        ``"linear"``, ``"sigmoid"``, ``"relu"``, or a callable on float64 tensors (hashable, so
        that it can be cached).
    sigma
        Known noise standard deviation.

    Returns
    -------
    CQT
        ``(alpha, beta, gamma, c3, c2)``.

    Raises
    ------
    ValueError
        If ``g`` is not (alpha, beta, gamma)-valid (singular system or a zero constant).
    """
    return _cqt_cached(activation, float(sigma))


# ------------------------------------------------------------------------------- score functions


class Score(Protocol):
    """Score functions ``S2``, ``S3`` of the input density, as weighted sums over a chunk.

    A non-Gaussian input density (e.g. a Gaussian mixture, Makkuva et al. Section 4.1) is
    supported by implementing these two methods for its scores ``S_m = (-1)^m grad^m p / p``.
    """

    def second(self, X: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_n weights_n S2(x_n)``, shape ``(d, d)``."""
        ...

    def third_whitened(
        self, X: torch.Tensor, weights: torch.Tensor, whitener: torch.Tensor
    ) -> torch.Tensor:
        """``sum_n weights_n S3(x_n)(W, W, W)`` for ``W = whitener`` ``(d, k)``; ``(k, k, k)``."""
        ...


#: Elements of the ``w x`` block of :meth:`GaussianScore.second` (4 MB in float64).
_BLOCK_ELEMENTS = 1 << 19


class GaussianScore:
    """Scores of ``N(0, I_d)``: ``S2 = x x^T - I``, ``S3 = x^{(x)3} - sym(x (x) I)``."""

    def second(self, X: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_n w_n (x_n x_n^T - I)``, one GEMM per block of rows (the ``w x`` temporary of a
        block stays in the cache)."""
        n, d = X.shape
        rows = max(256, _BLOCK_ELEMENTS // max(d, 1))
        S = X.new_zeros(d, d)
        for s in range(0, n, rows):
            Xb = X[s : s + rows]
            S.addmm_(Xb.T, weights[s : s + rows, None] * Xb)
        S.diagonal().sub_(weights.sum())
        return S

    def third_whitened(
        self, X: torch.Tensor, weights: torch.Tensor, whitener: torch.Tensor
    ) -> torch.Tensor:
        """``sum_n w_n [u_n^{(x)3} - sym(u_n (x) M)]`` with ``u_n = W^T x_n``, ``M = W^T W``.

        ``S3(x)(W, W, W)`` has ``x (x) e_j (x) e_j`` summed over ``j`` mapped to ``u (x) M``; the
        sum over the three placements of ``u`` is ``sym``. The sums ``sum_n w_n u_a u_b u_c``
        (``b <= c``) and ``sum_n w_n u_a`` are weighted sums of products of the rows of ``u^T``
        (:func:`~moebench_plugins.models.native.weighted_sums`); only ``(k, n)`` intermediates.
        """
        uT = whitener.T @ X.T  # (k, n) written directly (the GEMM reads X transposed)
        if uT.stride(1) != 1:
            uT = uT.contiguous()
        k = uT.shape[0]
        pairs = Pairs.packed(k, ones=True)
        S = weighted_sums(uT, [(weights[None, :] * uT, pairs)])[0]
        iu = torch.triu_indices(k, k, device=X.device)
        T = X.new_zeros(k, k, k)
        T[:, iu[0], iu[1]] = S[:, :-1]
        T[:, iu[1], iu[0]] = S[:, :-1]
        s = S[:, -1]
        M = whitener.T @ whitener
        T -= s[:, None, None] * M[None, :, :]
        T -= s[None, :, None] * M[:, None, :]
        T -= s[None, None, :] * M[:, :, None]
        return T


GAUSSIAN_SCORE = GaussianScore()


class MixtureScore:
    """Scores of ``sum_j pi_j N(mu_j, I_d)``: ``S_m(x) = sum_j r_j(x) He_m(x - mu_j)``.

    ``r_j(x)`` is the posterior of component ``j`` and ``He_m`` the Hermite tensors of
    :class:`GaussianScore` (Janzamin, Sedghi & Anandkumar 2014; Makkuva et al. Section 4.1).

    Parameters
    ----------
    density
        The input density (:class:`moebench.density.GaussianMixtureDensity`).
    """

    def __init__(self, density: GaussianMixtureDensity):
        self.density = density

    def second(self, X: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_n w_n sum_j r_nj ((x_n - mu_j)(x_n - mu_j)^T - I)``."""
        r = self.density.responsibilities(X)
        mu = self.density.centers(X)
        return sum(
            GAUSSIAN_SCORE.second(X - mu[j], weights * r[:, j]) for j in range(mu.shape[0])
        )

    def third_whitened(
        self, X: torch.Tensor, weights: torch.Tensor, whitener: torch.Tensor
    ) -> torch.Tensor:
        """``sum_n w_n sum_j r_nj He_3(x_n - mu_j)(W, W, W)``."""
        r = self.density.responsibilities(X)
        mu = self.density.centers(X)
        return sum(
            GAUSSIAN_SCORE.third_whitened(X - mu[j], weights * r[:, j], whitener)
            for j in range(mu.shape[0])
        )


def score_for(density: GaussianMixtureDensity | None) -> Score:
    """The score functions of ``density``; ``N(0, I)`` when it is ``None`` (unknown)."""
    if density is None or density.is_standard:
        return GAUSSIAN_SCORE
    return MixtureScore(density)


@dataclass
class WhitenedMoments:
    """Second moment, its top-``k`` eigenpairs, and the whitened third moment.

    Attributes
    ----------
    T2
        ``E[P2(y) S2(x)]``, ``(d, d)``.
    U, eigvals
        Top-``k`` eigenvectors ``(d, k)`` and eigenvalues ``(k,)`` of ``sign(c2) T2`` (eigenvalues
        floored at a tiny positive value so that the whitening stays finite).
    whitener
        ``W~ = U diag(eigvals)^{-1/2}``, ``(d, k)``: ``W~^T sign(c2) T2 W~ = I_k``.
    T3
        ``T3(W~, W~, W~) = E[P3(y) S3(x)(W~, W~, W~)]``, ``(k, k, k)``.
    """

    T2: torch.Tensor
    U: torch.Tensor
    eigvals: torch.Tensor
    whitener: torch.Tensor
    T3: torch.Tensor


def whitened_moments(
    X: torch.Tensor,
    y: torch.Tensor,
    k: int,
    coeffs: CQT,
    *,
    chunk_size: int = 65536,
    score: Score = GAUSSIAN_SCORE,
) -> WhitenedMoments:
    """Empirical ``T2``, whitening from its top-``k`` eigenpairs, and the whitened ``T3``.

    Parameters
    ----------
    X, y
        Inputs ``(n, d)`` and targets ``(n,)``.
    k
        Number of experts (rank of ``T2`` and ``T3``), ``k <= d``.
    coeffs
        CQT coefficients.
    chunk_size
        Rows per chunk of the passes over the data (memory ``O(chunk_size k^2)``).
    score
        Score functions of the input density (Gaussian by default).

    Returns
    -------
    WhitenedMoments
        Float64 tensors on ``X``'s device.
    """
    n, d = X.shape
    if not 1 <= k <= d:
        raise ValueError(f"need 1 <= k <= d, got k={k}, d={d}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    X = X.to(torch.float64)
    y = y.to(torch.float64)
    chunks = [(X[s : s + chunk_size], y[s : s + chunk_size]) for s in range(0, n, chunk_size)]
    T2 = X.new_zeros(d, d)
    for Xc, yc in chunks:
        T2 += score.second(Xc, coeffs.p2(yc))
    T2 /= n
    T2 = 0.5 * (T2 + T2.T)
    sign = 1.0 if coeffs.c2 > 0 else -1.0
    evals, evecs = torch.linalg.eigh(sign * T2)
    evals, U = evals[-k:].flip(0), evecs[:, -k:].flip(1)
    floor = torch.finfo(torch.float64).eps * max(float(evals.abs().max()), 1e-300)
    evals = evals.clamp_min(floor)
    whitener = U * evals.rsqrt()
    T3 = X.new_zeros(k, k, k)
    for Xc, yc in chunks:
        T3 += score.third_whitened(Xc, coeffs.p3(yc), whitener)
    T3 /= n
    return WhitenedMoments(T2=T2, U=U, eigvals=evals, whitener=whitener, T3=T3)


# ------------------------------------------------------------------------ tensor decompositions


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    t = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    return t.to(like.device)


def _contract2(T: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Rows ``T(I, v, v)`` for each row ``v`` of ``V`` ``(m, p)``; shape ``(m, p)``."""
    return torch.einsum("abc,mb,mc->ma", T, V, V)


def _contract3(T: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``T(v, v, v)`` for each row ``v`` of ``V``; shape ``(m,)``."""
    return (_contract2(T, V) * V).sum(dim=1)


def _unit_rows(V: torch.Tensor) -> torch.Tensor:
    return V / V.norm(dim=1, keepdim=True).clamp_min(torch.finfo(V.dtype).tiny)


def tensor_power_method(
    T: torch.Tensor,
    k: int,
    n_restarts: int,
    n_iter: int,
    generator: torch.Generator,
    *,
    tol: float = 1e-13,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust tensor power method with restarts and deflation (Anandkumar et al. 2014, Alg. 1).

    For each of ``k`` components: ``n_restarts`` random unit starts, all iterated
    ``v <- T(I, v, v) / ||T(I, v, v)||`` together for up to ``n_iter`` steps; the start with the
    largest ``T(v, v, v)`` is iterated ``n_iter`` more steps, ``lambda = T(v, v, v)``, and
    ``lambda v^{(x)3}`` is deflated from ``T``.

    Parameters
    ----------
    T
        Symmetric tensor ``(p, p, p)``.
    k
        Number of components.
    n_restarts, n_iter
        Random starts per component and power iterations per phase.
    generator
        Source of the random starts.
    tol
        Stop iterating when no vector moves by more than ``tol``.

    Returns
    -------
    lambdas : torch.Tensor
        ``(k,)``, positive (the sign of each ``v`` is chosen so).
    V : torch.Tensor
        ``(p, k)``, unit columns ``v_i``.
    """
    T = T.to(torch.float64).clone()
    p = T.shape[0]

    def iterate(V: torch.Tensor) -> torch.Tensor:
        for _ in range(n_iter):
            new = _unit_rows(_contract2(T, V))
            done = float((new - V).abs().max()) <= tol
            V = new
            if done:
                break
        return V

    lambdas, vecs = [], []
    for _ in range(k):
        starts = iterate(_unit_rows(_randn((max(1, n_restarts), p), generator, T)))
        best = int(torch.argmax(_contract3(T, starts)))
        v = iterate(starts[best : best + 1])
        lam = _contract3(T, v)[0]
        if lam < 0:
            v, lam = -v, -lam
        v = v[0]
        T -= lam * v[:, None, None] * v[None, :, None] * v[None, None, :]
        lambdas.append(lam)
        vecs.append(v)
    return torch.stack(lambdas), torch.stack(vecs, dim=1)


def orth_als(
    T: torch.Tensor,
    k: int,
    n_iter: int,
    generator: torch.Generator,
    *,
    tol: float = 1e-13,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonalized ALS (Sharan & Valiant 2017), symmetric version.

    Each iteration orthonormalises the ``k`` factor columns (Gram-Schmidt, via QR with a positive
    diagonal) and then takes the ALS update; with orthonormal factors the Gram matrices are the
    identity, so the symmetric ALS update is ``v_i <- T(I, v_i, v_i)``. The whitened tensors this
    module decomposes are orthogonally decomposable, so orthogonalisation is kept on throughout
    (Sharan & Valiant's ``stop_orth = Inf``).

    Parameters
    ----------
    T
        Symmetric tensor ``(p, p, p)``, ``p >= k``.
    k
        Number of components.
    n_iter
        Maximum number of iterations.
    generator
        Source of the random initial factors.
    tol
        Stop when no orthonormalised column moves by more than ``tol``.

    Returns
    -------
    lambdas : torch.Tensor
        ``(k,)``, ``T(v_i, v_i, v_i)``, made positive by the sign of ``v_i``; sorted decreasingly.
    V : torch.Tensor
        ``(p, k)``, orthonormal columns.
    """
    T = T.to(torch.float64)
    p = T.shape[0]
    if k > p:
        raise ValueError(f"orth_als needs k <= p, got k={k}, p={p}")

    def orthonormal(V: torch.Tensor) -> torch.Tensor:
        Q, R = torch.linalg.qr(V)
        s = torch.sign(R.diagonal())
        return Q * torch.where(s == 0, torch.ones_like(s), s)

    Q = orthonormal(_randn((p, k), generator, T))
    for _ in range(n_iter):
        new = orthonormal(_contract2(T, Q.T).T)
        done = float((new - Q).abs().max()) <= tol
        Q = new
        if done:
            break
    V = Q.T
    lambdas = _contract3(T, V)
    V = V * torch.where(lambdas < 0, -1.0, 1.0)[:, None]
    lambdas = lambdas.abs()
    order = torch.argsort(lambdas, descending=True)
    return lambdas[order], V[order].T


def unwhiten(
    moments: WhitenedMoments, lambdas: torch.Tensor, V: torch.Tensor, coeffs: CQT
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regressors and mixing weights from the decomposition of the whitened ``T3``.

    Since ``W~^T sign(c2) T2 W~ = I``, the vectors ``u_i = sqrt(|c2| pi_i) W~^T a_i`` are
    orthonormal and ``T~3 = sum_i c3 / (|c2|^{3/2} sqrt(pi_i)) u_i^{(x)3}`` (NOTES §2.4, checked
    numerically). The decomposition returns ``lambda_i > 0``, i.e. ``v_i = sign(c3) u_i`` and
    ``lambda_i = |c3| / (|c2|^{3/2} sqrt(pi_i))``. Hence ``a_i ∝ sign(c3) U Λ^{1/2} v_i``
    (``U Λ^{1/2}`` inverts ``W~^T`` on the span of ``U``), normalised to unit norm, and
    ``pi_i = (|c3| / (|c2|^{3/2} lambda_i))^2``.

    Parameters
    ----------
    moments
        The whitening used to build ``T~3``.
    lambdas, V
        Positive weights ``(k,)`` and unit components ``(k, k)`` (columns) of ``T~3``.
    coeffs
        CQT coefficients.

    Returns
    -------
    A : torch.Tensor
        ``(k, d)``, unit rows.
    pi : torch.Tensor
        ``(k,)``, mixing-weight estimates (not renormalised).
    """
    sign = 1.0 if coeffs.c3 > 0 else -1.0
    A = sign * (moments.U * moments.eigvals.sqrt()) @ V  # (d, k)
    A = _unit_rows(A.T)
    pi = (abs(coeffs.c3) / (abs(coeffs.c2) ** 1.5 * lambdas.clamp_min(1e-300))).square()
    return A, pi


@dataclass
class SpectralEstimate:
    """Output of :func:`estimate_regressors`."""

    A: torch.Tensor
    pi: torch.Tensor
    lambdas: torch.Tensor
    moments: WhitenedMoments


def estimate_regressors(
    X: torch.Tensor,
    y: torch.Tensor,
    k: int,
    coeffs: CQT,
    generator: torch.Generator,
    *,
    decomposition: Literal["tpm", "orth-als"] = "tpm",
    n_restarts: int = 10,
    n_iter: int = 100,
    chunk_size: int = 65536,
    score: Score = GAUSSIAN_SCORE,
) -> SpectralEstimate:
    """Makkuva et al., Algorithm 1: unit-norm regressors ``a_i`` from ``T2`` and ``T3``.

    Parameters
    ----------
    X, y
        Inputs ``(n, d)`` and targets ``(n,)``.
    k
        Number of experts.
    coeffs
        CQT coefficients for the activation and the known noise level.
    generator
        Randomness of the decomposition.
    decomposition
        ``"tpm"`` (:func:`tensor_power_method`) or ``"orth-als"`` (:func:`orth_als`).
    n_restarts, n_iter
        Restarts (TPM only) and iterations of the decomposition.
    chunk_size
        Rows per chunk when accumulating moments.
    score
        Score functions of the input density.

    Returns
    -------
    SpectralEstimate
        ``A`` ``(k, d)`` in float64 on ``X``'s device, mixing weights, ``lambdas``, moments.
    """
    moments = whitened_moments(X, y, k, coeffs, chunk_size=chunk_size, score=score)
    if decomposition == "tpm":
        lambdas, V = tensor_power_method(moments.T3, k, n_restarts, n_iter, generator)
    elif decomposition == "orth-als":
        lambdas, V = orth_als(moments.T3, k, n_iter, generator)
    else:
        raise ValueError(f"unknown decomposition {decomposition!r}; use 'tpm' or 'orth-als'")
    A, pi = unwhiten(moments, lambdas, V, coeffs)
    return SpectralEstimate(A=A, pi=pi, lambdas=lambdas, moments=moments)


# ------------------------------------------------------------------- k = 2 gate by moments


def _sigmoid_slope_moment(u: float) -> float:
    """``h(u) = E[Z sigmoid(u Z)]``, increasing from 0 to ``1/sqrt(2 pi)``."""
    return gaussian_expectation(lambda z: z * torch.sigmoid(u * z))


def _invert_slope_moment(target: float, max_norm: float) -> float:
    """``u in [0, max_norm]`` with ``h(u) = target`` (bisection; clipped to the interval)."""
    if not target > 0:
        return 0.0
    if target >= _sigmoid_slope_moment(max_norm):
        return float(max_norm)
    lo, hi = 0.0, float(max_norm)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _sigmoid_slope_moment(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def moment_gate_k2(
    X: torch.Tensor,
    y: torch.Tensor,
    A: torch.Tensor,
    activation: ActivationLike,
    *,
    max_norm: float = 10.0,
) -> torch.Tensor:
    """Method-of-moments gate for ``k = 2`` experts given the regressors.

    With ``p(z = 1 | x) = sigmoid(w . x)``, ``x ~ N(0, I)``, ``w`` orthogonal to ``span(a_1, a_2)``
    and ``Delta(x) = g(a_1 . x) - g(a_2 . x)``, ``E[y | x] - g(a_2 . x) = sigmoid(w . x) Delta(x)``
    and, splitting ``x`` along ``w/||w||`` (``Z``, independent of ``Delta``) and the rest,

    .. math::

        P_{A^\\perp} E[(y - g(a_2^\\top x)) \\Delta(x) x]
            = E[Z \\sigma(\\lVert w\\rVert Z)] \\, E[\\Delta(x)^2] \\, w / \\lVert w\\rVert,

    where ``P_{A^perp}`` projects out ``span(a_1, a_2)`` (needed for non-linear ``g``; a no-op in
    expectation for linear ``g``, where this generalises NOTES §2.6's ``E[y (a_1 . x) x]``). The
    direction is read off and ``||w||`` follows by inverting the increasing map
    ``u -> E[Z sigmoid(u Z)]`` (saturating at ``1/sqrt(2 pi)``, so large norms are ill-conditioned
    and clipped at ``max_norm``). This is our identity, not the paper's Theorem 3 (which uses
    ``1{Ratio <= 1/2}`` and only gives the direction).

    Parameters
    ----------
    X, y
        Inputs ``(n, d)`` and targets ``(n,)``.
    A
        Regressors ``(2, d)``; the gate returned is that of expert 0 against expert 1.
    activation
        The expert non-linearity ``g``.
    max_norm
        Upper bound on ``||w||``.

    Returns
    -------
    torch.Tensor
        ``W`` of shape ``(2, d)`` with ``W[1] = 0``, float64 on ``X``'s device.
    """
    if A.shape[0] != 2:
        raise ValueError(f"the moment gate estimate needs k = 2 experts, got k = {A.shape[0]}")
    g = _as_callable(activation)
    X = X.to(torch.float64)
    y = y.to(torch.float64)
    A = A.to(X.device, torch.float64)
    G = g(X @ A.T)
    delta = G[:, 0] - G[:, 1]
    m = X.T @ ((y - G[:, 1]) * delta) / X.shape[0]
    Q, _ = torch.linalg.qr(A.T)
    m = m - Q @ (Q.T @ m)
    norm_m = float(m.norm())
    W = X.new_zeros(2, X.shape[1])
    scale = float(delta.square().mean())
    if norm_m == 0.0 or scale == 0.0:
        return W
    u = _invert_slope_moment(norm_m / scale, max_norm)
    W[0] = m * (u / norm_m)
    return W
