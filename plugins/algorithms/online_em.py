"""Online EM (Cappé & Moulines 2009) for the regression MoE with linear experts.

Each mini-batch of ``batch_size`` rows gets an E-step at the current parameters; running
averages of the experts' sufficient statistics follow it with step ``gamma_t`` (``t`` counts
mini-batches), and the experts' M-step is solved from the averages (Cappé & Moulines, eq. 7-8:
``s_t = s_{t-1} + gamma_t (E[s | batch_t] - s_{t-1})``, ``theta_t = argmax Q(s_t)``). The
softmax gate has no finite sufficient statistics; it takes a Newton step on a quadratic model of
the averaged gate objective, whose gradient and Hessian are averaged with the same steps (the
gradient carried along each step: ``g <- g - H delta``).

The steps are ``gamma_t = 1`` for the first ``t0`` mini-batches (EM on each batch: far from a
maximum, decreasing steps would slow the escape from the start's basin, measured on the
``online-em-memory`` experiment), then ``gamma_t = (t / t0)^-alpha`` with ``1/2 < alpha <= 1``.
The parameters reported and returned are the polynomial-decay average of the iterates
(Shamir & Zhang 2013, ``eta = 3``: weight ``4 / (t + 3)`` for iterate ``t``), which removes most
of the noise of the last iterates (Polyak-Ruppert averaging, Cappé & Moulines section 2.3).

The data is read only through row slices ``X[s:e]``: a tensor (then visited in a random order
drawn from the problem's generator), a ``numpy.memmap`` or
:class:`~moebench_plugins.datasets.arrays.ParquetColumns` (visited in file order, one
mini-batch in memory at a time), so that ``X`` need not fit in memory; batches are moved to the
model's device (CPU or CUDA: the same code). One reported iteration is one pass over the data
(contract item 2), with the number of mini-batch updates in ``extras``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from moebench import Algorithm, Callback, Iterate, Model, ParamDict, Params, Problem, hookimpl
from moebench_plugins.models.kernels import ExpertStats, RowChunks, em_pass, solve_experts
from moebench_plugins.models.regression import RegressionMoE
from moebench_plugins.models.regression.numerics import noise_from_residuals

__all__ = ["OnlineEM", "OnlineEMParams", "row_batches"]


class OnlineEMParams(Params):
    """Parameters of online EM."""

    batch_size: int = Field(
        10000, ge=1, description="rows per mini-batch (the memory online EM holds of the data)"
    )
    alpha: float = Field(
        0.6, gt=0.5, le=1.0, description="step-size exponent: gamma_t = (t / t0)^-alpha after "
        "the first t0 mini-batches (Cappé & Moulines: 1/2 < alpha <= 1)"
    )
    t0: int = Field(
        50, ge=1, description="mini-batches taken with the full step gamma = 1 (EM on each "
        "batch) before the steps decrease"
    )
    average: bool = Field(
        True, description="report the polynomial-decay average of the iterates (Shamir & "
        "Zhang 2013) rather than the last iterate"
    )
    gate_ridge: float = Field(
        1e-6, gt=0, description="ridge on the gate's Newton steps (keeps them finite when the "
        "posteriors are separable)"
    )
    shuffle: bool = Field(
        True, description="visit the rows of in-memory data in a new random order each pass "
        "(drawn from the problem's generator); out-of-core data is always read in file order"
    )
    tol: float = Field(
        0.0, ge=0, description="stop when the relative decrease of the pass's mean NLL falls "
        "below tol (0 disables)"
    )


@dataclass
class _Averages:
    """Running averages of the sufficient statistics and of the gate's quadratic model."""

    experts: ExpertStats  # the experts' statistics, as means over rows
    grad: torch.Tensor    # (k-1, d) gradient of the mean gate objective at the current W
    hess: torch.Tensor    # ((k-1)d, (k-1)d) its negated Hessian

    def tensors(self) -> tuple[torch.Tensor, ...]:
        e = self.experts
        return e.mass, e.G, e.b, e.yy, self.grad, self.hess

    def update(self, new: _Averages, gamma: float) -> None:
        for old, value in zip(self.tensors(), new.tensors(), strict=True):
            old.add_(value - old, alpha=gamma)


def row_batches(X: Any, y: Any, batch_size: int, order: torch.Tensor | None = None
                ) -> Iterator[tuple[Any, Any]]:
    """Mini-batches ``(X_b, y_b)`` of a data source, as the source's own slices.

    Parameters
    ----------
    X, y
        Inputs ``(n, d)`` and targets ``(n,)``: tensors, numpy arrays (memory maps) or any
        array-like with ``shape`` and row slices (:class:`ParquetColumns`).
    batch_size
        Rows per batch (the last one may be shorter).
    order
        A permutation of the rows to visit them in (tensors only); ``None``: in order.
    """
    n = int(X.shape[0])
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        if order is None:
            yield X[s:e], y[s:e]
        else:
            idx = order[s:e]
            yield X.index_select(0, idx), y.index_select(0, idx)


class OnlineEM(Algorithm):
    """Online (stochastic) EM on mini-batches: linear experts and softmax gate."""

    name = "online-em"
    summary = "online EM on mini-batches with running sufficient statistics (Cappé & Moulines)"
    Params = OnlineEMParams

    def unsupported_reason(self, model: Model) -> str | None:
        """Only the regression MoE with linear experts has finite sufficient statistics."""
        if not isinstance(model, RegressionMoE):
            return f"online-em needs the regression-moe family; {model.name!r} is not it"
        if model.params.activation != "linear":
            return ("online-em needs linear experts (finite sufficient statistics); "
                    f"activation is {model.params.activation!r}")
        return None

    @torch.no_grad()
    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Pass over the data in mini-batches until ``callback`` says stop (or ``tol``).

        The objective of iteration ``t >= 1`` is the mean NLL of the pass's mini-batches, each
        at the parameters it met (progressive validation: no extra pass over the data);
        iteration 0 reports ``None``. ``extras``: ``updates`` (mini-batches so far) and
        ``step`` (the last ``gamma_t``). The parameters reported are the averaged iterates
        (``average``), the objective that of the iterates themselves.
        """
        model: RegressionMoE = problem.model  # type: ignore[assignment]
        p = self.params
        params = {k: v.detach().clone() for k, v in init.items()}
        if not callback(Iterate(0, params)):
            return params
        X, y = problem.X, problem.y
        n = int(X.shape[0])
        stream = _Stream(model, p)
        previous = math.inf
        mean = params
        for epoch in range(1, 2**62):
            order = None
            if p.shuffle and isinstance(X, torch.Tensor):
                g = problem.generator
                order = torch.randperm(n, generator=g, device=g.device).to(X.device)
            total = 0.0
            for xb, yb in row_batches(X, y, p.batch_size, order):
                params, nll_sum = stream.step(params, xb, yb)
                total += nll_sum
                # polynomial-decay averaging (Shamir & Zhang 2013, eta = 3)
                w = 4.0 / (stream.t + 3) if p.average else 1.0
                mean = {k: mean[k] + w * (v - mean[k]) for k, v in params.items()}
            nll = total / n
            extras = {"updates": float(stream.t), "step": stream.gamma}
            if not callback(Iterate(epoch, mean, objective=nll, extras=extras)):
                return mean
            if not math.isfinite(nll) or (
                    p.tol > 0 and (previous - nll) / max(abs(previous), 1e-300) < p.tol):
                return mean
            previous = nll
        return mean


class _Stream:
    """The state of online EM between mini-batches: the averages and the step counter."""

    def __init__(self, model: RegressionMoE, params: OnlineEMParams) -> None:
        self.model, self.p = model, params
        self.avg: _Averages | None = None
        self.t = 0
        self.gamma = 1.0

    def step(self, params: ParamDict, xb: Any, yb: Any) -> tuple[ParamDict, float]:
        """E-step on one batch, averages updated, M-step; returns the new parameters and the
        batch's summed NLL at the old ones.

        The batch's statistics come from one fused pass of the family's kernel
        (:func:`~moebench_plugins.models.kernels.em_pass`, as in joint EM's E-step): the
        responsibilities, the log-likelihood, the experts' weighted Grams and the gate's
        gradient and Hessian.
        """
        b = int(xb.shape[0])
        chunks = RowChunks(xb, yb, chunk_size=max(1, b), intercept=self.model.params.intercept,
                           device=self.model.device, dtype=self.model.dtype)
        st = em_pass(chunks, params["A"], params["W"], params["log_sigma"], expert_stats=True,
                     gate=True)
        ex, gate = st.experts, st.gate
        batch = _Averages(ExpertStats(ex.mass / b, ex.G / b, ex.b / b, ex.yy / b),
                          gate.grad / b, gate.neg_hessian / b)
        self.t += 1
        p = self.p
        self.gamma = 1.0 if self.t <= p.t0 else (self.t / p.t0) ** -p.alpha
        if self.avg is None:
            self.avg = batch
        else:
            self.avg.update(batch, self.gamma)
        return self._m_step(params), -st.loglik

    def _m_step(self, params: ParamDict) -> ParamDict:
        """Experts and noise from the averaged statistics (joint EM's weighted least squares
        and noise update, the averages standing for the sums over one row), a Newton step for
        the gate."""
        avg = self.avg
        assert avg is not None
        stats = avg.experts
        A = solve_experts(stats, params["A"], 1)
        log_sigma = params["log_sigma"].clone()
        noise = self.model.params.noise
        if noise != "known":
            floor = 1e-12 * (float(stats.yy.sum() / stats.mass.sum().clamp_min(1e-300)) + 1e-300)
            log_sigma = noise_from_residuals(noise, stats.sse(A).clamp_min(0.0), stats.mass,
                                             floor, log_sigma, 1)
        return {"A": A, "W": self._gate_step(params["W"]), "log_sigma": log_sigma}

    def _gate_step(self, W: torch.Tensor) -> torch.Tensor:
        """A Newton step on the quadratic model of the averaged gate objective (with ridge);
        the model's gradient then moves with the step."""
        avg = self.avg
        assert avg is not None
        k1, d = avg.grad.shape
        if k1 == 0:
            return W.clone()
        lam = self.p.gate_ridge
        free = W[:-1].reshape(-1)
        H = avg.hess + lam * torch.eye(k1 * d, dtype=W.dtype, device=W.device)
        g = avg.grad.reshape(-1) - lam * free
        delta = torch.linalg.solve(H, g)
        if not bool(torch.isfinite(delta).all()):
            return W.clone()
        avg.grad.sub_((avg.hess @ delta).reshape(k1, d))
        out = W.clone()
        out[:-1] += delta.reshape(k1, d)
        return out


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`OnlineEM`."""
    register(OnlineEM)
