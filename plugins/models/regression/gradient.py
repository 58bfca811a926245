"""The gradient view of the regression MoE (:class:`RegressionGradient`).

What gradient-based algorithms (``gd``, ``gradient-em``) use: the free parameters and their
constraints, the mean NLL whose gradient comes from one fused pass (:class:`ChunkedNLL`, by
Fisher's identity) and ``Q(. | theta_t)`` with its gradient (:class:`LinearQ`).
"""

from __future__ import annotations

from typing import Any

import torch

from moebench import ParamDict
from moebench.em import SupportsEM

from ..kernels import ChunkedLabels, ExpertStats, GateStats, RowChunks, em_pass, gate_pass
from .numerics import expert_q, full_gate_grad

__all__ = ["ChunkedNLL", "LinearQ", "RegressionGradient"]


class RegressionGradient:
    """Free parameters, the chunked NLL and the ``Q`` oracle of
    :class:`~moebench_plugins.models.regression.RegressionMoE` (a mixin of it)."""

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
                return ChunkedNLL.apply(self, X, y, params["A"], params["W"],
                                        params["log_sigma"])
            return -self.log_likelihood(params, X, y).mean()
        st = self._e_step(params, X, y)
        return X.new_tensor(-st.loglik / X.shape[0])

    def q_oracle(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> LinearQ | None:
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
        return LinearQ(chunks, R, st.experts, W.clone(), st.gate)


class LinearQ:
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
        q_e, dA, dls = expert_q(self.stats, A, ls, grad)
        st = self._gate_at(W, grad)
        q = (q_e + st.q) / n
        if not grad:
            return q, None
        return q, {"A": dA / n, "W": full_gate_grad(st.grad) / n, "log_sigma": dls / n}


class ChunkedNLL(torch.autograd.Function):
    """The mean NLL of linear experts by one fused pass, its gradient by Fisher's identity.

    The gradient is a constant of the forward pass; where derivatives of the gradient are asked
    for (``create_graph=True``: Hessians, Hessian-vector products), the backward differentiates
    the dense log-likelihood instead, so that second derivatives are those of the NLL.
    """

    @staticmethod
    def forward(ctx: Any, model: SupportsEM, X: torch.Tensor, y: torch.Tensor,
                A: torch.Tensor, W: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        chunks = model.chunks(X, y)
        n = chunks.n_rows
        st = em_pass(chunks, A.detach(), W.detach(), log_sigma.detach(), expert_stats=True,
                     gate=True, gate_hessian=False)
        _, dA, dls = expert_q(st.experts, A.detach(), log_sigma.detach(), True)
        ctx.model = model
        ctx.save_for_backward(-dA / n, -full_gate_grad(st.gate.grad) / n, -dls / n,
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
