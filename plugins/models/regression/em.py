"""WHERE THE E-STEP IS: the EM iteration of the regression MoE (:class:`RegressionEM`).

The E-step is :meth:`RegressionEM.posterior` (responsibilities), computed, like the
log-likelihood, by the chunked kernel :func:`~moebench_plugins.models.kernels.em_pass`;
:meth:`RegressionEM.em_step` fuses it with the M-step statistics in one pass over the data, and
:meth:`RegressionEM.m_step` is the M-step (experts by
:class:`~moebench_plugins.models.regression.experts.ExpertMStep`, gate by damped Newton). The
mirror step (``eta < 1``) is in :mod:`~moebench_plugins.models.regression.mirror`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from moebench import ParamDict
from moebench.em import GateOptions
from moebench.errors import UnsupportedProblem

from ..caching import data_cache
from ..gate import DEFAULT_TOL, fit_gate_chunked, fit_softmax_gate
from ..kernels import ChunkedLabels, GateStats, LabelFn, RowChunks, em_pass, posterior_labels
from .numerics import gate_q, gate_step_rejected, projected_gate

__all__ = ["GATE_HESSIAN", "REUSE_GATE_HESSIAN", "RegressionEM"]

#: The :class:`~moebench_plugins.models.caching.DataCache` entry of a ``RowChunks`` holding
#: ``(W, H)``: the gate's negated Hessian sum ``H`` at the last gate ``W`` of an EM M-step on
#: that data. With posterior labels (``s_n = 1``) ``H`` depends on ``W`` and the inputs alone, so
#: the next E-step at the same ``W`` (EM near convergence leaves the gate unchanged) reuses it
#: instead of summing its Grams again.
GATE_HESSIAN = "gate_hessian"
#: Whether :meth:`RegressionEM.em_step` keeps that Hessian (the tests switch it off to compare).
REUSE_GATE_HESSIAN = True


class RegressionEM:
    """The E-step, the M-step and the fused EM step of
    :class:`~moebench_plugins.models.regression.RegressionMoE` (a mixin of it).

    Uses the family's densities (:meth:`gate_log_probs`, :meth:`expert_log_densities`), its
    data as row chunks (:meth:`chunks`) and its expert M-step (:meth:`m_step_experts`,
    :meth:`_experts_from_stats`).
    """

    def joint_log_probs(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(y_n, z_n = i | x_n)``, shape ``(n, k)``."""
        return self.gate_log_probs(params, X) + self.expert_log_densities(params, X, y)

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
        W_old = projected_gate(params["W"], gate.radius)
        old_q = gate_q(torch.log_softmax(F @ W_old.T, dim=1), labels)
        new_q = gate_q(torch.log_softmax(F @ W.T, dim=1), labels)
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
        hit = data_cache(chunks).get(GATE_HESSIAN)
        H = hit[1] if hit is not None and torch.equal(hit[0], W) else None
        stats = em_pass(chunks, A, W, log_sigma, R_out=R, expert_stats=True, gate=True,
                        gate_hessian=H is None)
        first = stats.gate if H is None else dataclasses.replace(stats.gate, neg_hessian=H)
        labels = R if R is not None else posterior_labels(A, W, log_sigma, n_rows=n)
        new = self._experts_from_stats(chunks, labels, params, stats.experts)
        new, extras = self._gate_from_stats(chunks, labels, params, gate, first, new,
                                            remember=True)
        return new, {**extras, "nll": -stats.loglik / n}

    def _gate_from_stats(
        self, chunks: RowChunks, R: torch.Tensor | LabelFn, params: ParamDict,
        gate: GateOptions, first: GateStats | None, new: ParamDict, *, remember: bool = False,
    ) -> tuple[ParamDict, dict[str, float]]:
        """EM's gate M-step (``eta = 1``) from the fused pass's Newton system, safeguarded.

        ``remember``: keep the Hessian at the result for the next E-step (posterior labels), as
        the data's :data:`GATE_HESSIAN`.
        """
        n = chunks.n_rows
        W, info = fit_gate_chunked(
            chunks, R, params["W"], ridge=gate.ridge, max_steps=gate.max_steps,
            radius=gate.radius, tol=DEFAULT_TOL, first=first,
        )
        if remember and REUSE_GATE_HESSIAN and info["neg_hessian"] is not None:
            data_cache(chunks)[GATE_HESSIAN] = (W.clone(), info["neg_hessian"])
        W_old = projected_gate(params["W"], gate.radius)
        rejected = gate_step_rejected(info, W_old, W, gate.ridge, n)
        new["W"] = W_old.clone() if rejected else W
        return new, {"gate_newton_steps": float(info["steps"]), "gate_rejected": float(rejected)}
