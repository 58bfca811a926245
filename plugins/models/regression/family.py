"""The regression MoE family: mixture of regression experts with a softmax gate (Makkuva et al.
2019, eq. 1).

.. math::

    p(z = i \\mid x) = \\mathrm{softmax}(W x)_i, \\qquad
    y \\mid x, z = i \\sim \\mathcal{N}\\big(g(a_i^\\top x), \\sigma_i^2\\big),

with the last gate row ``w_k`` fixed at zero (softmax is invariant to adding a common vector to
all rows) and ``g`` linear, sigmoid or ReLU.

:class:`RegressionMoE` holds the model (parameters, initialisation, densities, predictions,
parameter error); its EM, expert M-step, mirror step and gradient view are the mixins of
:mod:`.em`, :mod:`.experts`, :mod:`.mirror` and :mod:`.gradient`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from moebench import InitSpec, ParamDict, Params
from moebench.em import SupportsEM
from moebench.errors import UnsupportedProblem

from ..alignment import permuted_error
from ..kernels import DEFAULT_CHUNK_SIZE, RowChunks, activate, cached_row_chunks
from .em import RegressionEM
from .experts import ExpertMStep
from .gradient import RegressionGradient
from .mirror import RegressionMirror
from .numerics import LOG_2PI, rows_to_norm, to_frobenius

__all__ = ["Activation", "InitError", "RegressionMoE"]

Activation = Literal["linear", "sigmoid", "relu"]


class InitError(UnsupportedProblem, ValueError):
    """An initialisation scheme cannot be used for this problem (e.g. near-truth without truth)."""


class RegressionMoE(RegressionEM, ExpertMStep, RegressionMirror, RegressionGradient, SupportsEM):
    """Mixture of ``k`` regression experts ``N(g(a_i . x), sigma_i^2)`` with a softmax gate.

    Parameters are ``{"A": (k, d'), "W": (k, d'), "log_sigma": (k,)}`` where ``d' = d`` or
    ``d + 1`` with an intercept; ``W[-1]`` is always zero. ``log_sigma`` is always present: it stays
    at ``log(sigma)`` for ``noise="known"`` and has equal entries for ``noise="shared"``.

    The E-step, M-step and fused EM step are :class:`~.em.RegressionEM`'s, the experts' M-step
    :class:`~.experts.ExpertMStep`'s, the mirror step :class:`~.mirror.RegressionMirror`'s and
    the gradient view (free parameters, chunked NLL, ``Q`` oracle)
    :class:`~.gradient.RegressionGradient`'s.
    """

    name = "regression-moe"
    summary = "k regression experts N(g(a_i.x), sigma_i^2) with a softmax gate (Makkuva et al.)"
    task = "regression"

    class Params(Params):
        """Hyper-parameters of the regression MoE family."""

        k: int = Field(2, ge=1, description="number of experts")
        activation: Activation = Field(
            "linear", description="expert non-linearity g: linear, sigmoid or relu"
        )
        noise: Literal["known", "shared", "per_expert"] = Field(
            "known",
            description="noise std: known (fixed at sigma), shared (one estimated std) or "
            "per_expert (one estimated std per expert)",
        )
        sigma: float = Field(
            1.0, gt=0, description="the known noise std, or the start value when estimated"
        )
        intercept: bool = Field(
            False, description="append a constant-1 feature to the inputs of experts and gate"
        )
        chunk_size: int = Field(
            DEFAULT_CHUNK_SIZE, ge=1,
            description="rows per chunk of the fused E-step / M-step passes over the data "
            "(memory O(chunk_size (k^2 + d)) beyond the data, up to O(chunk_size k^2 d) without "
            "the native kernel; "
            "results do not depend on it "
            "beyond rounding)",
        )

    # ------------------------------------------------------------------ shapes and features

    @property
    def n_experts(self) -> int:
        """Number of experts ``k``."""
        return int(self.params.k)

    @property
    def dim(self) -> int:
        """Number of columns ``d'`` of ``A`` and ``W`` (``d``, plus one with an intercept)."""
        return self.n_features + int(self.params.intercept)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of ``A``, ``W`` and ``log_sigma``."""
        k, d = self.n_experts, self.dim
        return {"A": (k, d), "W": (k, d), "log_sigma": (k,)}

    def features(self, X: torch.Tensor) -> torch.Tensor:
        """Inputs as seen by experts and gate: ``X`` with a column of ones appended if configured.

        Parameters
        ----------
        X
            Inputs, shape ``(n, d)``.

        Returns
        -------
        torch.Tensor
            Shape ``(n, d')``.
        """
        if not self.params.intercept:
            return X
        return torch.cat([X, X.new_ones(X.shape[0], 1)], dim=1)

    # ------------------------------------------------------------------ initialisation

    def _randn(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        t = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
        return t.to(self.device, self.dtype)

    def _initial_log_sigma(self) -> torch.Tensor:
        return torch.full(
            (self.n_experts,), math.log(self.params.sigma), dtype=self.dtype, device=self.device
        )

    def init_params(
        self, spec: InitSpec, generator: torch.Generator, truth: ParamDict | None = None
    ) -> ParamDict:
        """Initial parameters drawn with ``generator``.

        Parameters
        ----------
        spec
            ``random``: Gaussian entries with std ``scale / sqrt(d')``; ``unit-rows``: Gaussian
            rows rescaled to norm ``scale``; ``near-truth``: the truth plus a random perturbation of
            Frobenius norm ``radius`` on ``A`` and on the free gate rows ``W[:-1]``.
        generator
            Source of randomness.
        truth
            Ground truth (needed by ``near-truth``).

        Returns
        -------
        ParamDict
            ``A``, ``W`` (last row zero) and ``log_sigma`` (at ``log(sigma)``).

        Raises
        ------
        InitError
            ``near-truth`` without ground truth, or with truth of the wrong shape.
        """
        k, d = self.n_experts, self.dim
        if spec.scheme == "random":
            A = self._randn((k, d), generator) * (spec.scale / math.sqrt(d))
            W = self._randn((k, d), generator) * (spec.scale / math.sqrt(d))
        elif spec.scheme == "unit-rows":
            A = rows_to_norm(self._randn((k, d), generator), spec.scale)
            W = rows_to_norm(self._randn((k, d), generator), spec.scale)
        elif spec.scheme == "near-truth":
            if truth is None:
                raise InitError(
                    "init scheme 'near-truth' needs ground-truth parameters, but this dataset "
                    "has none; use scheme 'random' or 'unit-rows'"
                )
            for name in ("A", "W"):
                if name not in truth or tuple(truth[name].shape) != (k, d):
                    got = tuple(truth[name].shape) if name in truth else "missing"
                    raise InitError(
                        f"truth[{name!r}] has shape {got}, expected {(k, d)} for k={k} experts "
                        f"and d'={d} columns"
                    )
            A_t = truth["A"].to(self.device, self.dtype)
            W_t = truth["W"].to(self.device, self.dtype)
            W_t = W_t - W_t[-1:]
            A = A_t + to_frobenius(self._randn((k, d), generator), spec.radius)
            W = W_t.clone()
            if k > 1:
                W[:-1] += to_frobenius(self._randn((k - 1, d), generator), spec.radius)
        else:  # pragma: no cover - InitSpec validates the scheme
            raise InitError(f"unknown init scheme {spec.scheme!r}")
        W = W.clone()
        W[-1] = 0
        return {"A": A, "W": W, "log_sigma": self._initial_log_sigma()}

    # ------------------------------------------------------------------ densities

    def expert_means(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """Expert predictions ``g(a_i . x_n)``, shape ``(n, k)``."""
        return activate(self.features(X) @ params["A"].T, self.params.activation)

    def gate_log_probs(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """Gate log-probabilities ``log softmax(W x_n)_i``, shape ``(n, k)``.

        Parameters
        ----------
        params
            Model parameters (``W`` is used).
        X
            Inputs, shape ``(n, d)``.
        """
        return torch.log_softmax(self.features(X) @ params["W"].T, dim=1)

    def expert_log_densities(
        self, params: ParamDict, X: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """Gaussian log-densities ``log N(y_n; g(a_i . x_n), sigma_i^2)``, shape ``(n, k)``.

        Parameters
        ----------
        params
            Model parameters (``A`` and ``log_sigma`` are used).
        X, y
            Inputs ``(n, d)`` and targets ``(n,)``.
        """
        log_sigma = params["log_sigma"]
        z = (y[:, None] - self.expert_means(params, X)) * torch.exp(-log_sigma)
        return -0.5 * LOG_2PI - log_sigma - 0.5 * z * z

    # ------------------------------------------------------------------ data and predictions

    def chunks(self, X: torch.Tensor, y: torch.Tensor | None) -> RowChunks:
        """The data as row chunks for the fused kernels (features with the intercept row).

        Parameters
        ----------
        X, y
            Inputs ``(n, d)`` and targets ``(n,)`` (tensors, arrays or memory-mapped arrays).
        """
        return cached_row_chunks(X, y, chunk_size=self.params.chunk_size,
                                 intercept=self.params.intercept)

    def _differentiable(self, params: ParamDict, *tensors: torch.Tensor) -> bool:
        """Whether autograd must see the computation (then the dense formulas are used)."""
        if not torch.is_grad_enabled():
            return False
        return any(v.requires_grad for v in params.values()) or any(
            t.requires_grad for t in tensors
        )

    def predict(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``E[y | x] = sum_i softmax(W x)_i g(a_i . x)``, shape ``(n,)``."""
        gate = torch.softmax(self.features(X) @ params["W"].T, dim=1)
        return (gate * self.expert_means(params, X)).sum(dim=1)

    # ------------------------------------------------------------------ parameter error

    def parameter_error(self, params: ParamDict, truth: ParamDict) -> float:
        """``E(A, W)``: the distance to the truth, minimised over permutations of the experts.

        .. math::

            E = \\min_\\pi \\lVert A_\\pi - A^* \\rVert_F
                + \\lVert (W_\\pi - \\mathbf{1} w_{\\pi(k)}^\\top)
                          - (W^* - \\mathbf{1} w_{k}^{*\\top}) \\rVert_F

        The gates are compared after re-referencing to the expert that comes last (after the
        permutation), since softmax is invariant to adding a common vector to all rows. The search
        is exhaustive for ``k <= 7``; beyond, the permutation is the optimal assignment of the rows
        of ``A`` (Hungarian algorithm on squared distances).

        Parameters
        ----------
        params
            Estimated parameters.
        truth
            True parameters (same layout).

        Returns
        -------
        float
            The error.
        """
        A = params["A"].detach().to("cpu", torch.float64)
        W = params["W"].detach().to("cpu", torch.float64)
        A_t = truth["A"].detach().to("cpu", torch.float64)
        W_t = truth["W"].detach().to("cpu", torch.float64)
        if A.shape != A_t.shape or W.shape != W_t.shape:
            raise ValueError(
                f"parameter shapes A {tuple(A.shape)}, W {tuple(W.shape)} differ from the "
                f"truth's A {tuple(A_t.shape)}, W {tuple(W_t.shape)}"
            )
        return permuted_error(A, A_t, W, W_t - W_t[-1:])

    def param_groups(self) -> dict[str, list[str]]:
        """Experts: ``A`` and ``log_sigma``; gate: ``W``."""
        return {"experts": ["A", "log_sigma"], "gate": ["W"]}
