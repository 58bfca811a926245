"""Mixture of regression experts with a softmax gate (Makkuva et al. 2019, eq. 1).

.. math::

    p(z = i \\mid x) = \\mathrm{softmax}(W x)_i, \\qquad
    y \\mid x, z = i \\sim \\mathcal{N}\\big(g(a_i^\\top x), \\sigma_i^2\\big),

with the last gate row ``w_k`` fixed at zero (softmax is invariant to adding a common vector to
all rows) and ``g`` linear, sigmoid or ReLU.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from moebench import InitSpec, ParamDict, Params
from moebench.em import GateOptions, SupportsEM
from moebench.errors import UnsupportedProblem

from .alignment import permuted_error
from .gate import DEFAULT_TOL, fit_gate_chunked, fit_softmax_gate, project_rows
from .kernels import (
    DEFAULT_CHUNK_SIZE,
    ChunkedLabels,
    ExpertStats,
    GateStats,
    LabelFn,
    RowChunks,
    activate,
    cached_row_chunks,
    em_pass,
    gate_pass,
    posterior_labels,
    solve_experts,
    weighted_sse_pass,
)

__all__ = ["InitError", "RegressionMoE"]

#: The gate's negated Hessian sum at the last gate of an EM M-step, per data (``RowChunks``):
#: ``(W, H)``. With posterior labels (``s_n = 1``) ``H`` depends on ``W`` and the inputs alone,
#: so the next E-step at the same ``W`` (EM near convergence leaves the gate unchanged) reuses
#: it instead of summing its Grams again.
_GATE_HESSIANS: weakref.WeakKeyDictionary[RowChunks, tuple[torch.Tensor, torch.Tensor]] = (
    weakref.WeakKeyDictionary())
#: The statistics of the last mirror step per data: ``(R, (A, W, log_sigma), P, pass of R, pass
#: of P)``, for :meth:`RegressionMoE.mirror_step_diagnostics` of the same step.
_MIRROR_STATS: weakref.WeakKeyDictionary[RowChunks, tuple] = weakref.WeakKeyDictionary()

Activation = Literal["linear", "sigmoid", "relu"]
_LOG_2PI = math.log(2.0 * math.pi)


class InitError(UnsupportedProblem, ValueError):
    """An initialisation scheme cannot be used for this problem (e.g. near-truth without truth)."""


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


class RegressionMoE(SupportsEM):
    """Mixture of ``k`` regression experts ``N(g(a_i . x), sigma_i^2)`` with a softmax gate.

    Parameters are ``{"A": (k, d'), "W": (k, d'), "log_sigma": (k,)}`` where ``d' = d`` or
    ``d + 1`` with an intercept; ``W[-1]`` is always zero. ``log_sigma`` is always present: it stays
    at ``log(sigma)`` for ``noise="known"`` and has equal entries for ``noise="shared"``.
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
            A = _rows_to_norm(self._randn((k, d), generator), spec.scale)
            W = _rows_to_norm(self._randn((k, d), generator), spec.scale)
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
            A = A_t + _to_frobenius(self._randn((k, d), generator), spec.radius)
            W = W_t.clone()
            if k > 1:
                W[:-1] += _to_frobenius(self._randn((k - 1, d), generator), spec.radius)
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
        return -0.5 * _LOG_2PI - log_sigma - 0.5 * z * z

    def joint_log_probs(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(y_n, z_n = i | x_n)``, shape ``(n, k)``."""
        return self.gate_log_probs(params, X) + self.expert_log_densities(params, X, y)

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

    def log_likelihood(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample ``log p(y_n | x_n)`` by log-sum-exp over experts, shape ``(n,)``.

        Without autograd this is the chunked E-step kernel
        (:func:`~moebench_plugins.models.kernels.em_pass`).
        """
        if self._differentiable(params, X, y):
            return torch.logsumexp(self.joint_log_probs(params, X, y), dim=1)
        out = X.new_empty(X.shape[0])
        self._e_step(params, X, y, loglik_out=out)
        return out

    def nll(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood (a scalar tensor); chunked without autograd.

        With autograd on the parameters only (not on ``X``, ``y``) and linear experts it is
        chunked too: one fused pass computes the NLL and, by Fisher's identity (the gradient of
        the log-likelihood is that of ``Q(. | theta)`` at ``theta``), its gradient from the
        posterior's expert statistics and gate gradient, which the backward pass returns.
        """
        if self._differentiable(params, X, y):
            if (self.params.activation == "linear" and isinstance(X, torch.Tensor)
                    and not X.requires_grad and not y.requires_grad):
                return _ChunkedNLL.apply(self, X, y, params["A"], params["W"],
                                         params["log_sigma"])
            return -self.log_likelihood(params, X, y).mean()
        st = self._e_step(params, X, y)
        return X.new_tensor(-st.loglik / X.shape[0])

    def posterior(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Responsibilities ``p(z_n = i | x_n, y_n)``, shape ``(n, k)``, rows summing to one."""
        if self._differentiable(params, X, y):
            return torch.softmax(self.joint_log_probs(params, X, y), dim=1)
        R = X.new_empty(X.shape[0], self.n_experts)
        self._e_step(params, X, y, R_out=R)
        return R

    def _e_step(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor, **out: torch.Tensor):
        return em_pass(
            self.chunks(X, y), params["A"].detach(), params["W"].detach(),
            params["log_sigma"].detach(), activation=self.params.activation, **out,
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

    # ------------------------------------------------------------------ EM and GD helpers

    def trainable(self, params: ParamDict) -> list[str]:
        """Names of the parameters a generic optimiser should update.

        ``log_sigma`` is included only when the noise is estimated. The constraints (``W[-1] = 0``,
        equal entries of ``log_sigma`` for shared noise) are expressed by :meth:`free_params` and
        :meth:`from_free`.
        """
        names = ["A", "W"]
        if self.params.noise != "known":
            names.append("log_sigma")
        return names

    def free_params(self, params: ParamDict) -> dict[str, torch.Tensor]:
        """The unconstrained trainable tensors: ``A``, the free gate rows ``W[:-1]`` and, when
        estimated, ``log_sigma`` (a single entry for shared noise).

        Parameters
        ----------
        params
            Parameters in the model's layout.

        Returns
        -------
        dict
            Copies (detached) of the free tensors, by name.
        """
        free = {"A": params["A"].detach().clone(), "W_free": params["W"][:-1].detach().clone()}
        if self.params.noise == "shared":
            free["log_sigma"] = params["log_sigma"][:1].detach().clone()
        elif self.params.noise == "per_expert":
            free["log_sigma"] = params["log_sigma"].detach().clone()
        return free

    def from_free(self, free: dict[str, torch.Tensor], params: ParamDict) -> ParamDict:
        """Rebuild the full parameters from :meth:`free_params` (differentiably).

        Parameters
        ----------
        free
            The free tensors.
        params
            Parameters providing the fixed parts (``log_sigma`` for known noise).
        """
        Wf = free["W_free"]
        W = torch.cat([Wf, Wf.new_zeros(1, Wf.shape[1])], dim=0)
        if "log_sigma" in free:
            log_sigma = free["log_sigma"].expand(self.n_experts)
        else:
            log_sigma = params["log_sigma"]
        return {"A": free["A"], "W": W, "log_sigma": log_sigma}

    def param_groups(self) -> dict[str, list[str]]:
        """Experts: ``A`` and ``log_sigma``; gate: ``W``."""
        return {"experts": ["A", "log_sigma"], "gate": ["W"]}

    def mirror_step_unsupported(self) -> str | None:
        """Mirror steps (``eta < 1``) are implemented for linear experts only."""
        if self.params.activation != "linear":
            return (
                f"mirror steps with eta < 1 are implemented for linear experts only, not "
                f"{self.params.activation!r} ones (use eta = 1, i.e. EM)"
            )
        return None

    def m_step(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor,
        params: ParamDict,
        gate: GateOptions,
        eta: float = 1.0,
    ) -> tuple[ParamDict, dict[str, float]]:
        """EM M-step (``eta = 1``) or mirror-descent step (``0 < eta < 1``, linear experts).

        ``eta = 1``: experts by (weighted) least squares, gate by damped Newton (projected onto
        ``||w_i|| <= gate.radius`` when set). The ridge makes the gate M-step maximise a
        penalised objective; to keep EM's guarantee for the unpenalised likelihood, a gate that
        lowers the unpenalised gate part of ``Q`` is refused (``gate_rejected``).

        ``0 < eta < 1`` (Fruytier, Mokhtari, Sanghavi, ICML 2025; NOTES.md section 1.4): in the
        natural coordinates of the complete-data family, ``Q_R(theta) = <theta, S_t> - A(theta)``
        and ``Q_self(theta) = <theta, grad A(theta_t)> - A(theta)`` up to constants, where
        ``Q_self`` takes the expectation under the model's own ``p(y, z | x; theta_t)``. Hence
        the mirror step ``argmin <eta grad L(theta_t), theta> + D_A(theta, theta_t)`` (with
        ``grad L = grad A - S_t``) is ``argmax eta Q_R + (1 - eta) Q_self`` over the model's
        parameters (a Bregman projection when the family is curved). With ``P_t`` the gate and
        ``mu_t`` the expert means at ``theta_t``, and ``E[(y - a.x)^2] = (mu_t - a.x)^2 +
        sigma_t^2`` under the model:

        * gate: softmax regression with soft labels ``T = eta R + (1 - eta) P_t``;
        * expert ``i``: weighted least squares with weights ``w = eta R_i + (1 - eta) P_t,i`` and
          targets ``(eta R_i y + (1 - eta) P_t,i mu_t,i) / w`` (equal to the mixed squared error
          up to a constant);
        * noise: ``sigma_i^2 = sum_n [eta R_ni (y_n - a_i.x_n)^2 + (1 - eta) P_t,ni ((mu_t,ni -
          a_i.x_n)^2 + sigma_t,i^2)] / sum_n w_ni`` (pooled over experts for shared noise).

        The gate ridge is scaled by ``eta`` (composite mirror descent on
        ``L + ridge / 2 ||W||^2``) and the Newton stopping threshold by ``eta^2`` (the size of the
        subproblem's increase), so ``eta = 1`` is EM's penalised M-step exactly (same code path).
        Every block is accepted only if it does not lower its part of
        ``eta Q_R + (1 - eta) Q_self``, which, as ``Q_self`` is maximal at ``theta_t``, implies
        ``Q_R`` does not decrease: the NLL is monotone for every ``0 < eta <= 1``.

        Raises
        ------
        UnsupportedProblem
            ``eta != 1`` with sigmoid or ReLU experts.
        ValueError
            ``eta`` outside ``(0, 1]``.
        """
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"eta must be in (0, 1] (got {eta})")
        if eta == 1.0 and self.params.activation == "linear":
            chunks = self.chunks(X, y)
            stats = em_pass(chunks, params["A"], params["W"], params["log_sigma"], labels=R,
                            expert_stats=True, gate=True)
            new = self._experts_from_stats(chunks, R, params, stats.experts)
            return self._gate_from_stats(chunks, R, params, gate, stats.gate, new)
        if eta != 1.0 and self.params.activation == "linear":
            return self._mirror_step(X, y, R, params, gate, eta)
        F = self.features(X)
        if eta == 1.0:
            new = self.m_step_experts(X, y, R, params)
            labels = R
        else:
            reason = self.mirror_step_unsupported()
            if reason:
                raise UnsupportedProblem(reason)
            labels = eta * R + (1.0 - eta) * torch.softmax(F @ params["W"].T, dim=1)
            new = self._mirror_step_experts(X, y, R, params, eta)
        W, info = fit_softmax_gate(
            F, labels, params["W"], ridge=eta * gate.ridge, max_steps=gate.max_steps,
            radius=gate.radius, tol=DEFAULT_TOL * eta**2,
        )
        W_old = params["W"]
        if gate.radius is not None:
            W_old = torch.cat([project_rows(W_old[:-1], gate.radius), W_old[-1:]], dim=0)
        old_q = _gate_q(torch.log_softmax(F @ W_old.T, dim=1), labels)
        new_q = _gate_q(torch.log_softmax(F @ W.T, dim=1), labels)
        rejected = not (new_q >= old_q)
        new["W"] = W_old.clone() if rejected else W
        return new, {"gate_newton_steps": float(info["steps"]), "gate_rejected": float(rejected)}

    def em_step(
        self,
        X: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        params: ParamDict,
        gate: GateOptions,
        *,
        keep_responsibilities: bool = True,
    ) -> tuple[ParamDict, dict[str, float]]:
        """One EM iteration, E-step fused with the M-step statistics (one pass for linear experts).

        Equal, up to rounding, to ``m_step(X, y, posterior(params, X, y), params, gate)``: the
        pass computes the responsibilities ``R``, the log-likelihood at ``params``, every expert
        statistic and the gate's Newton system at ``params["W"]``; the expert and noise updates
        are small solves, and the gate Newton iterations make one pass per accepted full step.

        Parameters
        ----------
        X, y
            Inputs ``(n, d)`` and targets ``(n,)``: tensors, or numpy arrays such as the
            read-only memory maps of ``np.load(path, mmap_mode="r")`` (streamed chunk by chunk
            to this model's device and dtype, so ``n`` may exceed the memory).
        params
            Current parameters.
        gate
            Gate M-step settings.
        keep_responsibilities
            Keep ``R`` (``n x k`` in memory) for the gate passes; ``False`` recomputes it from
            ``params`` in every pass instead (streaming, linear experts only).

        Returns
        -------
        tuple
            New parameters and diagnostics, which include ``nll`` (the mean negative
            log-likelihood at ``params``, a by-product of the E-step).
        """
        if isinstance(X, torch.Tensor):
            chunks = self.chunks(X, y)
        else:
            chunks = RowChunks(X, y, chunk_size=self.params.chunk_size,
                               intercept=self.params.intercept, device=self.device,
                               dtype=self.dtype)
        n = chunks.n_rows
        linear = self.params.activation == "linear"
        if not keep_responsibilities and not linear:
            raise UnsupportedProblem("streaming EM steps need linear experts")
        A, W, log_sigma = params["A"], params["W"], params["log_sigma"]
        if not linear:
            # (n, k) with samples along the contiguous axis: chunks of R are rows of length c.
            R = torch.empty(self.n_experts, n, dtype=chunks.dtype, device=chunks.device).T
            st = em_pass(chunks, A, W, log_sigma, activation=self.params.activation, R_out=R)
            new, extras = self.m_step(torch.as_tensor(X), torch.as_tensor(y), R, params, gate)
            return new, {**extras, "nll": -st.loglik / n}
        # The posterior stays in the blocks the pass computed (no (n, k) copy).
        R = ChunkedLabels(n) if keep_responsibilities else None
        hit = _GATE_HESSIANS.get(chunks)
        H = hit[1] if hit is not None and torch.equal(hit[0], W) else None
        stats = em_pass(chunks, A, W, log_sigma, R_out=R, expert_stats=True, gate=True,
                        gate_hessian=H is None)
        first = stats.gate if H is None else dataclasses.replace(stats.gate, neg_hessian=H)
        labels = R if R is not None else posterior_labels(A, W, log_sigma, n_rows=n)
        new = self._experts_from_stats(chunks, labels, params, stats.experts)
        new, extras = self._gate_from_stats(chunks, labels, params, gate, first, new,
                                            remember=True)
        return new, {**extras, "nll": -stats.loglik / n}

    def _experts_from_stats(
        self, chunks: RowChunks, R: torch.Tensor | LabelFn, params: ParamDict,
        stats: ExpertStats,
    ) -> ParamDict:
        """Linear experts and noise from the sufficient statistics (see :meth:`m_step_experts`)."""
        n = chunks.n_rows
        A = solve_experts(stats, params["A"], n)
        log_sigma = params["log_sigma"].clone()
        if self.params.noise != "known":
            res2 = stats.sse(A)
            if bool((res2 <= 1e-6 * stats.yy).any()):
                # Cancellation in yy - 2 a.b + a'Ga: sum the residuals exactly.
                res2 = weighted_sse_pass(chunks, A, R)
            res2 = res2.clamp_min(0.0)
            mass = stats.mass
            # mean(y^2) when the responsibilities sum to one per sample, as in the dense path
            floor = 1e-12 * (float(stats.yy.sum() / mass.sum().clamp_min(1e-300)) + 1e-300)
            log_sigma = _noise_from_residuals(self.params.noise, res2, mass, floor, log_sigma, n)
        return {"A": A, "W": params["W"].clone(), "log_sigma": log_sigma}

    def _gate_from_stats(
        self, chunks: RowChunks, R: torch.Tensor | LabelFn, params: ParamDict,
        gate: GateOptions, first: GateStats | None, new: ParamDict, *, remember: bool = False,
    ) -> tuple[ParamDict, dict[str, float]]:
        """EM's gate M-step (``eta = 1``) from the fused pass's Newton system, safeguarded.

        ``remember``: keep the Hessian at the result for the next E-step (posterior labels).
        """
        n = chunks.n_rows
        W, info = fit_gate_chunked(
            chunks, R, params["W"], ridge=gate.ridge, max_steps=gate.max_steps,
            radius=gate.radius, tol=DEFAULT_TOL, first=first,
        )
        if remember and info["neg_hessian"] is not None:
            _GATE_HESSIANS[chunks] = (W.clone(), info["neg_hessian"])
        W_old = params["W"]
        if gate.radius is not None:
            W_old = torch.cat([project_rows(W_old[:-1], gate.radius), W_old[-1:]], dim=0)
        # J = q / n - ridge / 2 ||W||^2 at both ends of the Newton solve: compare the unpenalised q.
        old_q = n * (info["J0"] + 0.5 * gate.ridge * float(W_old.square().sum()))
        new_q = n * (info["J"] + 0.5 * gate.ridge * float(W.square().sum()))
        rejected = not (new_q >= old_q)
        new["W"] = W_old.clone() if rejected else W
        return new, {"gate_newton_steps": float(info["steps"]), "gate_rejected": float(rejected)}

    def _mirror_step(
        self, X: torch.Tensor, y: torch.Tensor, R: torch.Tensor, params: ParamDict,
        gate: GateOptions, eta: float,
    ) -> tuple[ParamDict, dict[str, float]]:
        """The mirror step (``eta < 1``) of linear experts from chunked statistics.

        The same step as :meth:`_mirror_step_experts` and the dense gate solve of :meth:`m_step`
        (equal to rounding): with ``P`` the gate at ``theta_t``, the mixed weights ``w = eta R +
        (1 - eta) P`` and targets give the normal equations ``(eta G_R + (1 - eta) G_P) a =
        eta b_R + (1 - eta) G_P a_t`` (``G``, ``b``: the expert statistics of the labels ``R``
        and ``P``), the mixed residuals ``eta sse_R(a) + (1 - eta) ((a_t - a)' G_P (a_t - a) +
        sigma_t^2 mass_P)``, and the gate's Newton system at ``W_t`` with labels ``T = eta R +
        (1 - eta) P`` is ``q_T = eta q_R + (1 - eta) q_P``, ``grad_T = eta grad_R`` and the
        Hessian of ``R`` (all label rows sum to one).
        """
        chunks = self.chunks(X, y)
        n = chunks.n_rows
        A_old, W_t, log_sigma_t = params["A"], params["W"], params["log_sigma"]
        P = _gate_probs(chunks, W_t)
        st_R = em_pass(chunks, A_old, W_t, log_sigma_t, labels=R, expert_stats=True, gate=True)
        st_P = em_pass(chunks, A_old, W_t, log_sigma_t, labels=P, expert_stats=True, gate=True,
                       gate_system=False)
        _MIRROR_STATS[chunks] = (R, (A_old.clone(), W_t.clone(), log_sigma_t.clone()), P, st_R,
                                 st_P)
        eR, eP = st_R.experts, st_P.experts
        GP_a = torch.matmul(eP.G, A_old.unsqueeze(2)).squeeze(2)
        mixed = ExpertStats(mass=eta * eR.mass + (1.0 - eta) * eP.mass,
                            G=eta * eR.G + (1.0 - eta) * eP.G,
                            b=eta * eR.b + (1.0 - eta) * GP_a, yy=eR.yy)
        A = solve_experts(mixed, A_old, n)
        log_sigma = log_sigma_t.clone()
        if self.params.noise != "known":
            sse_R = eR.sse(A)
            if bool((sse_R <= 1e-6 * eR.yy).any()):
                sse_R = weighted_sse_pass(chunks, A, R)  # cancellation in yy - 2 a.b + a'Ga
            D = A_old - A
            spread = (D * torch.matmul(eP.G, D.unsqueeze(2)).squeeze(2)).sum(1)
            res2 = eta * sse_R + (1.0 - eta) * (spread + torch.exp(2.0 * log_sigma_t) * eP.mass)
            floor = 1e-12 * (float(eR.yy.sum()) / n + 1e-300)  # mean(y^2): rows of R sum to 1
            log_sigma = _noise_from_residuals(self.params.noise, res2, mixed.mass, floor,
                                              log_sigma, n)
        new = {"A": A, "W": W_t.clone(), "log_sigma": log_sigma}
        labels = (eta * R.T + (1.0 - eta) * P.T).contiguous().T  # samples along the rows
        g = st_R.gate
        first = GateStats(q=eta * g.q + (1.0 - eta) * st_P.gate.q, grad=eta * g.grad,
                          neg_hessian=g.neg_hessian)
        ridge = eta * gate.ridge
        W, info = fit_gate_chunked(
            chunks, labels, W_t, ridge=ridge, max_steps=gate.max_steps, radius=gate.radius,
            tol=DEFAULT_TOL * eta**2, first=first,
        )
        W_old = W_t
        if gate.radius is not None:
            W_old = torch.cat([project_rows(W_old[:-1], gate.radius), W_old[-1:]], dim=0)
        # J = q / n - ridge / 2 ||W||^2 at both ends of the Newton solve: compare the unpenalised q.
        old_q = n * (info["J0"] + 0.5 * ridge * float(W_old.square().sum()))
        new_q = n * (info["J"] + 0.5 * ridge * float(W.square().sum()))
        rejected = not (new_q >= old_q)
        new["W"] = W_old.clone() if rejected else W
        return new, {"gate_newton_steps": float(info["steps"]), "gate_rejected": float(rejected)}

    def _mirror_step_experts(
        self, X: torch.Tensor, y: torch.Tensor, R: torch.Tensor, params: ParamDict, eta: float
    ) -> ParamDict:
        """Expert and noise part of the mirror step for linear experts (see :meth:`m_step`)."""
        F = self.features(X)
        n, d = F.shape
        P = torch.softmax(F @ params["W"].T, dim=1)
        mu = F @ params["A"].T  # (n, k) expert means at theta_t
        var_t = torch.exp(2.0 * params["log_sigma"])  # (k,)
        Wt = eta * R + (1.0 - eta) * P  # mixed weights, > 0 where P > 0
        Y = (eta * R * y[:, None] + (1.0 - eta) * P * mu) / Wt.clamp_min(1e-300)
        A_old = params["A"]
        A = A_old.clone()
        eye = torch.eye(d, dtype=F.dtype, device=F.device)
        mass = Wt.sum(dim=0)
        for i in range(self.n_experts):
            w = Wt[:, i]
            if float(mass[i]) <= 1e-12 * n:
                continue
            old = _weighted_sse(F, Y[:, i], w, A_old[i], "linear")
            G = F.T @ (w[:, None] * F)
            lam = 1e-10 * (G.diagonal().mean() + 1e-300)
            cand = _solve_sym(G + lam * eye, F.T @ (w * Y[:, i]))
            if torch.isfinite(cand).all() and _weighted_sse(F, Y[:, i], w, cand, "linear") <= old:
                A[i] = cand
        log_sigma = params["log_sigma"].clone()
        if self.params.noise != "known":
            fit = F @ A.T
            res2 = eta * R * (y[:, None] - fit).square() + (1.0 - eta) * P * (
                (mu - fit).square() + var_t
            )
            floor = 1e-12 * (y.square().mean() + 1e-300)
            if self.params.noise == "shared":
                s2 = (res2.sum() / Wt.sum()).clamp_min(floor)
                log_sigma = torch.full_like(log_sigma, 0.5) * torch.log(s2)
            else:
                s2 = (res2.sum(dim=0) / mass.clamp_min(1e-300)).clamp_min(floor)
                ok = mass > 1e-12 * n
                log_sigma = torch.where(ok, 0.5 * torch.log(s2), log_sigma)
        return {"A": A, "W": params["W"].clone(), "log_sigma": log_sigma}

    def mirror_step_diagnostics(
        self, params_old: ParamDict, params_new: ParamDict, X: torch.Tensor, y: torch.Tensor,
        R: torch.Tensor,
    ) -> tuple[float, float] | None:
        """``(mean KL, Q change)`` of a mirror step from chunked statistics (linear experts).

        ``mean(complete_data_kl(old, new, X))`` and ``q_value(new, X, y, R) - q_value(old, X, y,
        R)`` (equal to rounding) without ``(n, k)`` temporaries: with ``P`` the gate at ``old``,
        the gate terms are the objectives ``sum_n sum_i L_ni log p_i(x_n; W)`` of the labels
        ``L = R, P`` at both gates, and the expert terms follow from the expert statistics of
        ``R`` and ``P`` at ``old`` (``sum_n P_ni (m_old - m_new)^2 = (a_old - a_new)' G_P
        (a_old - a_new)``, the residual sums of ``R``). ``None`` for non-linear experts.

        Parameters
        ----------
        params_old, params_new
            The parameters before and after the step.
        X, y
            Training data.
        R
            The responsibilities ``(n, k)`` at ``params_old``.
        """
        if self.params.activation != "linear" or self._differentiable(params_new, X, y):
            return None
        chunks = self.chunks(X, y)
        n = chunks.n_rows
        A0, W0, ls0 = params_old["A"], params_old["W"], params_old["log_sigma"]
        A1, W1, ls1 = params_new["A"], params_new["W"], params_new["log_sigma"]
        hit = _MIRROR_STATS.get(chunks)
        if hit is not None and hit[0] is R and all(
                torch.equal(a, b) for a, b in zip(hit[1], (A0, W0, ls0), strict=True)):
            P, st_R, st_P = hit[2:]  # the statistics of the mirror step from these parameters
        else:
            P = _gate_probs(chunks, W0)
            st_R = em_pass(chunks, A0, W0, ls0, labels=R, expert_stats=True, gate=True,
                           gate_system=False)
            st_P = em_pass(chunks, A0, W0, ls0, labels=P, expert_stats=True, gate=True,
                           gate_system=False)
        q_R1 = gate_pass(chunks, R, W1, system=False).q
        q_P1 = gate_pass(chunks, P, W1, system=False).q
        eR, eP = st_R.experts, st_P.experts
        D = A0 - A1
        spread = (D * torch.matmul(eP.G, D.unsqueeze(2)).squeeze(2)).sum(1)
        gauss = (eP.mass * ((ls1 - ls0) + 0.5 * torch.exp(2 * (ls0 - ls1)) - 0.5)
                 + 0.5 * torch.exp(-2 * ls1) * spread)
        kl = (st_P.gate.q - q_P1 + float(gauss.sum())) / n
        # sum_n R_ni log N(y_n; a_i f_n, sigma_i^2) from the statistics of R
        experts = [float((eR.mass * (-0.5 * _LOG_2PI - ls)
                          - 0.5 * torch.exp(-2 * ls) * eR.sse(A)).sum())
                   for A, ls in ((A1, ls1), (A0, ls0))]
        dq = (q_R1 - st_R.gate.q + experts[0] - experts[1]) / n
        return kl, dq

    def q_oracle(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> _LinearQ | None:
        """The E-step at ``params`` and ``Q(. | params) / n`` with its gradient (linear experts).

        One fused pass computes the posterior ``R`` (kept as its blocks), the expert statistics
        of ``R`` (from which the expert part of ``Q`` and its gradient are closed forms) and the
        gate objective and gradient at ``params["W"]``; other gates cost a gate pass each.
        ``None`` for non-linear experts (use :meth:`posterior` and :meth:`q_value`).

        Parameters
        ----------
        params
            ``theta_t``, where the posterior is taken.
        X, y
            Training data.
        """
        if self.params.activation != "linear" or not isinstance(X, torch.Tensor):
            return None
        chunks = self.chunks(X, y)
        R = ChunkedLabels(chunks.n_rows)
        A, W, ls = (params[k].detach() for k in ("A", "W", "log_sigma"))
        st = em_pass(chunks, A, W, ls, R_out=R, expert_stats=True, gate=True,
                     gate_hessian=False)
        return _LinearQ(chunks, R, st.experts, W.clone(), st.gate)

    def complete_data_kl(
        self, params_old: ParamDict, params_new: ParamDict, X: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample ``KL(p(y, z | x; old) || p(y, z | x; new))`` in closed form, shape ``(n,)``.

        ``sum_i pi_i^old [log pi_i^old - log pi_i^new + KL(N(m_i^old, s_i^old^2) ||
        N(m_i^new, s_i^new^2))]`` with the Gaussian KL ``log(s_new / s_old) + (s_old^2 +
        (m_old - m_new)^2) / (2 s_new^2) - 1/2``.
        """
        lg_old = self.gate_log_probs(params_old, X)
        lg_new = self.gate_log_probs(params_new, X)
        m_old = self.expert_means(params_old, X)
        m_new = self.expert_means(params_new, X)
        ls_old, ls_new = params_old["log_sigma"], params_new["log_sigma"]
        gauss = (ls_new - ls_old) + 0.5 * (
            torch.exp(2 * (ls_old - ls_new)) + (m_old - m_new).square() * torch.exp(-2 * ls_new)
        ) - 0.5
        return (torch.exp(lg_old) * (lg_old - lg_new + gauss)).sum(dim=1)

    def m_step_experts(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor,
        params: ParamDict,
        *,
        gn_steps: int = 5,
    ) -> ParamDict:
        """EM M-step for the experts and the noise, the gate left unchanged.

        For linear experts, each ``a_i`` is the weighted least-squares fit with weights
        ``R[:, i]`` (plus a tiny ridge for stability). For sigmoid and ReLU experts, ``gn_steps``
        damped Gauss-Newton steps on the weighted squared error are taken from the current
        ``a_i``. A new ``a_i`` is kept only if it does not increase the weighted squared error, so
        the expected complete-data log-likelihood never decreases. The noise is then updated:
        ``shared``: pooled weighted residual variance; ``per_expert``: weighted residual variance
        of each expert; ``known``: unchanged.

        Parameters
        ----------
        X, y
            Inputs ``(n, d)`` and targets ``(n,)``.
        R
            Responsibilities ``(n, k)``.
        params
            Current parameters.
        gn_steps
            Gauss-Newton steps for non-linear experts.

        Returns
        -------
        ParamDict
            New parameters (``W`` copied unchanged).
        """
        if self.params.activation == "linear":
            chunks = self.chunks(X, y)
            stats = em_pass(chunks, params["A"], params["W"], params["log_sigma"], labels=R,
                            expert_stats=True)
            return self._experts_from_stats(chunks, R, params, stats.experts)
        F = self.features(X)
        n, d = F.shape
        act = self.params.activation
        A_old = params["A"]
        A = A_old.clone()
        eye = torch.eye(d, dtype=F.dtype, device=F.device)
        mass = R.sum(dim=0)
        for i in range(self.n_experts):
            r = R[:, i]
            if float(mass[i]) <= 1e-12 * n:
                continue  # an expert without responsibility keeps its parameters
            old_sse = _weighted_sse(F, y, r, A_old[i], act)
            if act == "linear":
                G = F.T @ (r[:, None] * F)
                lam = 1e-10 * (G.diagonal().mean() + 1e-300)
                cand = _solve_sym(G + lam * eye, F.T @ (r * y))
                if torch.isfinite(cand).all() and _weighted_sse(F, y, r, cand, act) <= old_sse:
                    A[i] = cand
            else:
                A[i] = _gauss_newton(F, y, r, A_old[i], act, gn_steps, eye)
        log_sigma = params["log_sigma"].clone()
        if self.params.noise != "known":
            res2 = (y[:, None] - activate(F @ A.T, act)).square()
            floor = 1e-12 * (y.square().mean() + 1e-300)
            if self.params.noise == "shared":
                s2 = ((R * res2).sum() / R.sum()).clamp_min(floor)
                log_sigma = torch.full_like(log_sigma, 0.5) * torch.log(s2)
            else:
                s2 = ((R * res2).sum(dim=0) / mass.clamp_min(1e-300)).clamp_min(floor)
                ok = mass > 1e-12 * n
                log_sigma = torch.where(ok, 0.5 * torch.log(s2), log_sigma)
        return {"A": A, "W": params["W"].clone(), "log_sigma": log_sigma}


# ---------------------------------------------------------------------------------- helpers


def _noise_from_residuals(noise: str, res2: torch.Tensor, mass: torch.Tensor, floor: float,
                          log_sigma: torch.Tensor, n: int) -> torch.Tensor:
    """The noise M-step from per-expert weighted residual sums ``res2`` and masses ``mass``:
    ``log sigma_i = log(res2_i / mass_i) / 2`` (pooled over experts for ``shared`` noise),
    variances floored at ``floor``; an expert without responsibility keeps its ``log_sigma``."""
    if noise == "shared":
        s2 = (res2.sum() / mass.sum()).clamp_min(floor)
        return torch.full_like(log_sigma, 0.5) * torch.log(s2)
    s2 = (res2 / mass.clamp_min(1e-300)).clamp_min(floor)
    return torch.where(mass > 1e-12 * n, 0.5 * torch.log(s2), log_sigma)


def _gate_probs(chunks: RowChunks, W: torch.Tensor) -> torch.Tensor:
    """The gate probabilities ``softmax(W f_n)``, ``(n, k)`` with the samples contiguous (the
    transpose of a ``(k, n)`` tensor: chunks of it are rows, as the passes read labels)."""
    d = chunks.n_features
    W = W.to(chunks.device, chunks.dtype)
    out = W.new_empty(W.shape[0], chunks.n_rows)
    for s, e, Z in chunks:
        out[:, s:e] = torch.softmax(W @ Z[:d], dim=0)
    return out.T


def _expert_q(stats: ExpertStats, A: torch.Tensor, log_sigma: torch.Tensor, grad: bool
              ) -> tuple[float, torch.Tensor | None, torch.Tensor | None]:
    """``sum_n sum_i r_ni log N(y_n; a_i . f_n, sigma_i^2)`` from the statistics of ``r`` and,
    with ``grad``, its gradients in ``A`` and ``log_sigma`` (sums over samples)."""
    inv_var = torch.exp(-2.0 * log_sigma)
    sse = stats.sse(A)
    q = float((stats.mass * (-0.5 * _LOG_2PI - log_sigma) - 0.5 * inv_var * sse).sum())
    if not grad:
        return q, None, None
    GA = torch.matmul(stats.G, A.unsqueeze(2)).squeeze(2)
    return q, inv_var[:, None] * (stats.b - GA), inv_var * sse - stats.mass


def _full_gate_grad(grad: torch.Tensor) -> torch.Tensor:
    """The gradient in all ``k`` gate rows from that in the free rows (labels summing to one:
    the rows' gradients sum to zero)."""
    return torch.cat([grad, -grad.sum(dim=0, keepdim=True)])


class _LinearQ:
    """``Q(theta | theta_t) / n`` of linear experts and its gradient (``q_oracle``).

    Parameters
    ----------
    chunks
        The data.
    R
        The posterior at ``theta_t``.
    stats
        Expert statistics of ``R``.
    W_t, gate_t
        The gate at ``theta_t`` and its objective and gradient with labels ``R``.
    """

    def __init__(self, chunks: RowChunks, R: ChunkedLabels, stats: ExpertStats,
                 W_t: torch.Tensor, gate_t: GateStats):
        self.chunks, self.R, self.stats = chunks, R, stats
        self._gate = [(W_t, gate_t)]

    def _gate_at(self, W: torch.Tensor, grad: bool) -> GateStats:
        for W_, st in self._gate:
            if (not grad or st.grad is not None) and torch.equal(W_, W):
                return st
        st = gate_pass(self.chunks, self.R, W, system=grad, hessian=False)
        self._gate = [self._gate[0], (W.clone(), st)]  # theta_t's and the latest
        return st

    def __call__(self, params: ParamDict, grad: bool = True
                 ) -> tuple[float, dict[str, torch.Tensor] | None]:
        """``Q / n`` at ``params`` and, with ``grad``, its gradient in ``A``, ``W`` and
        ``log_sigma``.

        Parameters
        ----------
        params
            The parameters (detached).
        grad
            Also return the gradient.
        """
        n = self.chunks.n_rows
        A, W, ls = (params[k].detach() for k in ("A", "W", "log_sigma"))
        q_e, dA, dls = _expert_q(self.stats, A, ls, grad)
        st = self._gate_at(W, grad)
        q = (q_e + st.q) / n
        if not grad:
            return q, None
        return q, {"A": dA / n, "W": _full_gate_grad(st.grad) / n, "log_sigma": dls / n}


class _ChunkedNLL(torch.autograd.Function):
    """The mean NLL of linear experts by one fused pass, its gradient by Fisher's identity.

    The gradient is a constant of the forward pass; where derivatives of the gradient are asked
    for (``create_graph=True``: Hessians, Hessian-vector products), the backward differentiates
    the dense log-likelihood instead, so that second derivatives are those of the NLL.
    """

    @staticmethod
    def forward(ctx: Any, model: RegressionMoE, X: torch.Tensor, y: torch.Tensor,
                A: torch.Tensor, W: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        chunks = model.chunks(X, y)
        n = chunks.n_rows
        st = em_pass(chunks, A.detach(), W.detach(), log_sigma.detach(), expert_stats=True,
                     gate=True, gate_hessian=False)
        _, dA, dls = _expert_q(st.experts, A.detach(), log_sigma.detach(), True)
        ctx.model = model
        ctx.save_for_backward(-dA / n, -_full_gate_grad(st.gate.grad) / n, -dls / n,
                              X, y, A, W, log_sigma)
        return A.new_tensor(-st.loglik / n)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dA, dW, dls, X, y, A, W, log_sigma = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the gradient itself will be differentiated
            params = {"A": A, "W": W, "log_sigma": log_sigma}
            wanted = [name for name, t in params.items() if t.requires_grad]
            nll = -ctx.model.log_likelihood(params, X, y).mean()
            grads = dict(zip(wanted, torch.autograd.grad(
                nll, [params[name] for name in wanted], create_graph=True), strict=True))
            dA, dW, dls = (grads.get(name) for name in ("A", "W", "log_sigma"))
        return (None, None, None, None if dA is None else g * dA, None if dW is None else g * dW,
                None if dls is None else g * dls)


def _gate_q(log_gate: torch.Tensor, R: torch.Tensor) -> float:
    """Unpenalised gate part of the EM objective, ``sum_n sum_i R_ni log p_i(x_n)``."""
    return float(torch.where(R > 0, R * log_gate, torch.zeros_like(log_gate)).sum())


def _rows_to_norm(M: torch.Tensor, norm: float) -> torch.Tensor:
    return M * (norm / M.norm(dim=1, keepdim=True).clamp_min(1e-300))


def _to_frobenius(M: torch.Tensor, norm: float) -> torch.Tensor:
    return M * (norm / M.norm().clamp_min(1e-300))


def _weighted_sse(
    F: torch.Tensor, y: torch.Tensor, r: torch.Tensor, a: torch.Tensor, act: str
) -> float:
    return float((r * (y - activate(F @ a, act)).square()).sum())


def _solve_sym(G: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(G)
    if int(info) == 0:
        return torch.cholesky_solve(b[:, None], L)[:, 0]
    return torch.linalg.lstsq(G, b[:, None]).solution[:, 0]


def _gauss_newton(
    F: torch.Tensor,
    y: torch.Tensor,
    r: torch.Tensor,
    a: torch.Tensor,
    act: str,
    steps: int,
    eye: torch.Tensor,
) -> torch.Tensor:
    """Damped Gauss-Newton on ``sum_n r_n (y_n - g(f_n . a))^2``; only decreasing steps."""
    sse = _weighted_sse(F, y, r, a, act)
    for _ in range(steps):
        u = F @ a
        res = y - activate(u, act)
        J = activate_grad(u, act)[:, None] * F
        G = J.T @ (r[:, None] * J)
        lam = 1e-8 * (G.diagonal().mean() + 1e-300)
        delta = _solve_sym(G + lam * eye, J.T @ (r * res))
        if not torch.isfinite(delta).all():
            break
        t, improved = 1.0, False
        for _ in range(20):
            cand = a + t * delta
            new = _weighted_sse(F, y, r, cand, act)
            if new < sse:
                a, sse, improved = cand, new, True
                break
            t *= 0.5
        if not improved:
            break
    return a
