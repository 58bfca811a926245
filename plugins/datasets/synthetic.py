"""Synthetic data from the mixture of regression experts of Makkuva et al. (2019), eq. 1.

``x ~ N(0, I_d)`` (``inputs="gaussian"``) or ``x ~ p N(mu_1, I_d) + (1 - p) N(mu_2, I_d)``
(``inputs="gmm"``, the non-Gaussian inputs of their Section 4.1 / Table 1, with ``mu_1`` and
``mu_2`` drawn independently and uniformly on the unit sphere); ``z ~ softmax(W x)`` with
``w_k = 0``; ``y = g(a_z . x) + sigma * eps``. The regressors ``a_i`` are uniform on the unit
sphere (``expert_cosine = 0``) or share a common direction, so that their pairwise cosine is
about ``expert_cosine`` (less separated experts); the free gate vectors have norm
``gate_norm`` and, with ``gating="orthogonal"``, are orthogonal to the span of the regressors
(the setting of the paper's theory; ``"generic"`` is the non-orthogonal setting of their
Section 4.2 / Table 2).

The data carry their input density (``Data.input_density``): ``N(0, I_d)`` or the two-component
mixture, so that score-function methods (``tensor-em``) use the right ``S_2``, ``S_3``
(Janzamin, Sedghi & Anandkumar 2014).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
from pydantic import Field, model_validator

from moebench import Data, Dataset, ModelSpec, Params, hookimpl
from moebench.density import GaussianMixtureDensity

__all__ = ["SyntheticMoE", "SyntheticSample", "activation_np", "require_more_samples_than_experts"]


def require_more_samples_than_experts(n: int, k: int) -> None:
    """Refuse ``n <= k`` training samples for ``k`` experts (each expert is fitted on the
    samples it draws), before anything runs."""
    if n <= k:
        raise ValueError(f"n={n} training samples for k={k} experts: n must be larger than k "
                         "(each expert is fitted on the samples it draws); raise n or lower k")


CITATION = (
    "A. V. Makkuva, S. Oh, S. Kannan, P. Viswanath. Breaking the gridlock in Mixture-of-Experts: "
    "Consistent and Efficient Algorithms. ICML 2019, PMLR 97:4304-4313."
)


def activation_np(t: np.ndarray, activation: str) -> np.ndarray:
    """The expert non-linearity ``g`` on numpy arrays."""
    if activation == "linear":
        return t
    if activation == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * t))  # overflow-free logistic
    if activation == "relu":
        return np.maximum(t, 0.0)
    raise ValueError(f"unknown activation {activation!r}")


def _share_direction(V: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """Unit rows ``sqrt(c) u + sqrt(1 - c) v_i`` with ``u`` a unit direction drawn from its own
    generator (seeded by ``(seed, 1)``) and ``v_i`` the unit rows of ``V`` made orthogonal to
    ``u``: pairwise cosines ``c + (1 - c) cos(v_i, v_j)``."""
    u = np.random.default_rng((seed, 1)).standard_normal(V.shape[1])
    u /= np.linalg.norm(u)
    V = V - np.outer(V @ u, u)
    V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-300)
    return np.sqrt(cosine) * u + np.sqrt(1.0 - cosine) * V


@dataclass(frozen=True)
class SyntheticSample:
    """Everything drawn for one seed: parameters, inputs, latent experts and targets.

    ``X``, ``z`` and ``y`` hold the training rows first, then the test rows.
    """

    A: np.ndarray
    W: np.ndarray
    X: np.ndarray
    z: np.ndarray
    y: np.ndarray
    density: GaussianMixtureDensity | None = None
    component: np.ndarray | None = None  #: mixture component of each input (GMM inputs only)


class SyntheticMoE(Dataset):
    """Samples from a k-expert regression MoE with known parameters."""

    name = "synthetic-moe"
    summary = ("k regression experts with a softmax gate, x ~ N(0, I) or a 2-component Gaussian "
               "mixture (Makkuva et al. 2019, eq. 1, Tables 1-2)")
    task = "regression"

    class Params(Params):
        """Parameters of the synthetic MoE generator."""

        n: int = Field(2000, ge=1, description="number of training samples")
        n_test: int = Field(1000, ge=1, description="number of test samples")
        d: int = Field(10, ge=1, description="input dimension")
        k: int = Field(2, ge=1, description="number of experts")
        sigma: float = Field(0.1, gt=0, description="noise standard deviation")
        activation: Literal["linear", "sigmoid", "relu"] = Field(
            "linear", description="expert non-linearity g"
        )
        gating: Literal["orthogonal", "generic"] = Field(
            "orthogonal",
            description="orthogonal: gate vectors orthogonal to the span of the regressors "
            "(needs d >= 2k - 1); generic: independent random directions",
        )
        gate_norm: float = Field(1.0, ge=0, description="norm of each free gate vector")
        expert_cosine: float = Field(
            0.0, ge=0, lt=1,
            description="separation of the experts: a_i = sqrt(c) u + sqrt(1 - c) v_i with u a "
            "common unit direction and v_i the uniform draws made orthogonal to u, so that "
            "cos(a_i, a_j) = c + (1 - c) cos(v_i, v_j), about c (0: uniform on the sphere)",
        )
        inputs: Literal["gaussian", "gmm"] = Field(
            "gaussian",
            description="input distribution: gaussian = N(0, I_d); gmm = p N(mu1, I_d) + "
            "(1 - p) N(mu2, I_d) with mu1, mu2 drawn uniformly on the unit sphere",
        )
        p: float = Field(
            0.5, gt=0, lt=1, description="weight of the first component (inputs='gmm' only)"
        )

        @model_validator(mode="after")
        def _more_samples_than_experts(self) -> Self:
            require_more_samples_than_experts(self.n, self.k)
            return self

        @model_validator(mode="after")
        def _check_dimension(self) -> Self:
            if self.gating == "orthogonal" and self.d < 2 * self.k - 1:
                raise ValueError(
                    f"gating='orthogonal' needs d >= 2k - 1 = {2 * self.k - 1} (got d={self.d}, "
                    f"k={self.k}); raise d or use gating='generic'"
                )
            return self

    def generate(self, seed: int) -> SyntheticSample:
        """Draw parameters and ``n + n_test`` samples with ``np.random.default_rng(seed)``.

        Parameters
        ----------
        seed
            Seed of the numpy generator; the same seed gives identical arrays.

        Returns
        -------
        SyntheticSample
            Parameters, inputs, latent expert indices, targets and the input density.

        Notes
        -----
        The draws are, in order: regressors, gate directions, (GMM inputs only: the two means),
        inputs, (GMM inputs only: the components), the Gumbel noise of the gate, the output
        noise. Gaussian inputs therefore give the same arrays as before GMM inputs existed.
        The common direction of ``expert_cosine > 0`` comes from a generator of its own, so
        that every other draw is the same whatever ``expert_cosine`` (and ``0`` gives the
        arrays of the generator before the parameter existed).
        """
        p = self.params
        rng = np.random.default_rng(seed)
        k, d, m = p.k, p.d, p.n + p.n_test
        A = rng.standard_normal((k, d))
        A /= np.linalg.norm(A, axis=1, keepdims=True)
        if p.expert_cosine > 0:
            A = _share_direction(A, p.expert_cosine, seed)
        G = rng.standard_normal((k - 1, d))
        if p.gating == "orthogonal":
            Q, _ = np.linalg.qr(A.T)  # orthonormal basis of span(a_1..a_k), shape (d, k)
            G = G - (G @ Q) @ Q.T
        G *= p.gate_norm / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-300)
        W = np.vstack([G, np.zeros((1, d))])
        if p.inputs == "gmm":
            means = rng.standard_normal((2, d))
            means /= np.linalg.norm(means, axis=1, keepdims=True)
            density = GaussianMixtureDensity(np.array([p.p, 1.0 - p.p]), means)
            X = rng.standard_normal((m, d))
            component = (rng.random(m) >= p.p).astype(np.int64)  # 0 with probability p
            X += means[component]
        else:
            density, component = GaussianMixtureDensity.standard(d), None
            X = rng.standard_normal((m, d))
        # Gumbel-max: argmax_i (logit_i + Gumbel noise) ~ softmax(logits).
        z = np.argmax(X @ W.T + rng.gumbel(size=(m, k)), axis=1)
        u = np.einsum("nd,nd->n", X, A[z])
        y = activation_np(u, p.activation) + p.sigma * rng.standard_normal(m)
        return SyntheticSample(A=A, W=W, X=X, z=z, y=y, density=density, component=component)

    def load(self, seed: int) -> Data:
        """Train/test arrays, the generating model and its true parameters."""
        p = self.params
        s = self.generate(seed)
        n = p.n
        return Data(
            X_train=s.X[:n],
            y_train=s.y[:n],
            X_test=s.X[n:],
            y_test=s.y[n:],
            task="regression",
            model=ModelSpec(
                "regression-moe",
                {"k": p.k, "activation": p.activation, "noise": "known", "sigma": p.sigma},
            ),
            truth={"A": s.A, "W": s.W, "log_sigma": np.full(p.k, np.log(p.sigma))},
            meta={
                "n": p.n,
                "n_test": p.n_test,
                "d": p.d,
                "k": p.k,
                "gating": p.gating,
                "gate_norm": p.gate_norm,
                **({"expert_cosine": p.expert_cosine} if p.expert_cosine else {}),
                "inputs": p.inputs,
                **({"p": p.p} if p.inputs == "gmm" else {}),
                "task": "regression",
                "source": "synthetic (Makkuva et al. 2019, eq. 1)",
                "citation": CITATION,
            },
            input_density=s.density,
        )


@hookimpl
def register_datasets(register: Callable[[type], None]) -> None:
    """Register :class:`SyntheticMoE`."""
    register(SyntheticMoE)
