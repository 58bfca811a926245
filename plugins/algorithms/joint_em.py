"""Joint EM on experts and gate (Jordan & Jacobs 1994).

Each iteration computes the responsibilities (E-step), refits the experts and the noise in
closed form (or by safeguarded Gauss-Newton for non-linear experts) and refits the gate by
damped Newton on the soft-label softmax regression, warm-started from the current gate. Every
sub-step never decreases the expected complete-data log-likelihood, so the training NLL is
monotonically non-increasing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pydantic import Field

from moebench import Algorithm, Callback, Iterate, Model, ParamDict, Params, Problem, hookimpl
from moebench.errors import UnsupportedProblem

from ..models.gate import fit_softmax_gate
from ..models.regression import RegressionMoE

__all__ = ["JointEM"]


def _gate_q(log_gate: torch.Tensor, R: torch.Tensor) -> float:
    """Unpenalised gate part of the EM objective, ``sum_n sum_i R_ni log p_i(x_n)``."""
    return float(torch.where(R > 0, R * log_gate, torch.zeros_like(log_gate)).sum())


class JointEM(Algorithm):
    """EM on all parameters jointly: E-step, expert M-step, exact gate M-step."""

    name = "joint-em"
    summary = "EM on experts and gate jointly (Jordan & Jacobs 1994)"

    class Params(Params):
        """Parameters of joint EM."""

        tol: float = Field(
            1e-8,
            ge=0,
            description="stop when the relative decrease of the training NLL falls below tol "
            "(0 disables)",
        )
        gate_steps: int = Field(20, ge=1, description="maximum Newton steps per gate M-step")
        gate_ridge: float = Field(
            1e-6, gt=0, description="ridge on the gate weights in the gate M-step"
        )

    def unsupported_reason(self, model: Model) -> str | None:
        """``None`` for :class:`RegressionMoE`; other families are not supported yet."""
        if isinstance(model, RegressionMoE):
            return None
        return f"joint-em supports only the regression-moe model family, not {model.name!r}"

    @torch.no_grad()
    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Run EM from ``init`` until ``callback`` returns ``False`` or the NLL stalls.

        Parameters
        ----------
        problem
            Model and training data.
        init
            Starting parameters.
        callback
            Called with iteration 0 (``init``) and after every EM iteration; the objective is the
            training NLL and ``extras["gate_newton_steps"]`` the Newton steps of the gate M-step.

        Returns
        -------
        ParamDict
            The last parameters.
        """
        model = problem.model
        if not isinstance(model, RegressionMoE):
            raise UnsupportedProblem(self.unsupported_reason(model) or "unsupported model")
        X, y = problem.X, problem.y
        F = model.features(X)
        params = {k: v.detach().clone() for k, v in init.items()}
        nll = float(model.nll(params, X, y))
        if not callback(Iterate(0, params, objective=nll)):
            return params
        t = 0
        while True:
            t += 1
            R = model.posterior(params, X, y)
            new = model.m_step_experts(X, y, R, params)
            W, info = fit_softmax_gate(
                F, R, params["W"], ridge=self.params.gate_ridge, max_steps=self.params.gate_steps
            )
            # The ridge makes the gate M-step maximise a penalised objective; keep the EM
            # guarantee for the unpenalised likelihood by refusing a gate that lowers its part of Q.
            old_q = _gate_q(torch.log_softmax(F @ params["W"].T, dim=1), R)
            new_q = _gate_q(torch.log_softmax(F @ W.T, dim=1), R)
            gate_kept = not (new_q >= old_q)
            new["W"] = params["W"].clone() if gate_kept else W
            new_nll = float(model.nll(new, X, y))
            params = new
            extras = {
                "gate_newton_steps": float(info["steps"]),
                "gate_rejected": float(gate_kept),
            }
            if not callback(Iterate(t, params, objective=new_nll, extras=extras)):
                return params
            if not math.isfinite(new_nll):
                return params
            if self.params.tol > 0 and _relative_decrease(nll, new_nll) < self.params.tol:
                return params
            nll = new_nll


def _relative_decrease(old: float, new: float) -> float:
    return (old - new) / max(abs(old), 1e-300)


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`JointEM`."""
    register(JointEM)
