"""The peers as moebench algorithms (``flexmix-em``, ``cgmm-em``), for leaderboards.

Each reports iteration 0 (the shared initialisation) and, as iteration 1, the peer's final state
after ``iterations`` of its own EM iterations (``extras``: ``peer_iterations``,
``peer_seconds``); a missing R or
cgmm makes the algorithm unsupported with the reason, so suites skip it instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pydantic import Field

import moebench
from moebench import Iterate
from moebench.errors import UnsupportedProblem

from .runners import cgmm_available, cgmm_fit, flexmix_available, flexmix_fit


class _PeerParams(moebench.Params):
    iterations: int = Field(100, ge=1, description="EM iterations the peer runs")


def _linear_moe_reason(model: moebench.Model, name: str, noise: str | None) -> str | None:
    p = getattr(model, "params", None)
    if model.name != "regression-moe" or p is None:
        return f"{name} fits the regression MoE only, not {model.name!r}"
    if p.activation != "linear" or p.intercept:
        return f"{name} needs linear experts without intercept"
    if noise is not None and p.noise != noise:
        return f"{name} estimates noise={noise!r} only (got {p.noise!r})"
    return None


class FlexmixEM(moebench.Algorithm):
    """EM of the R package flexmix (Gaussian GLM experts, multinomial concomitant gate)."""

    name = "flexmix-em"
    summary = "EM of R flexmix (through Rscript) from moebench's initialisation"
    Params = _PeerParams

    def unsupported_reason(self, model: moebench.Model) -> str | None:
        return _linear_moe_reason(model, self.name, "per_expert") or flexmix_available()

    def fit(self, problem, init, callback):
        reason = self.unsupported_reason(problem.model)
        if reason:
            raise UnsupportedProblem(reason)
        model, X, y = problem.model, problem.X, problem.y
        with torch.no_grad():
            R0 = model.posterior(init, X, y).cpu().numpy()
            if not callback(Iterate(0, init, objective=float(model.nll(init, X, y)))):
                return init
        res = flexmix_fit(X.cpu().numpy(), y.cpu().numpy(), R0, self.params.iterations)
        params = model.as_tensors(res.params)
        callback(Iterate(1, params, objective=-res.loglik / X.shape[0],
                         extras={"peer_seconds": res.seconds,
                                 "peer_iterations": float(res.iterations)}))
        return params


class CgmmEM(moebench.Algorithm):
    """EM of the Python package cgmm (its own model and initialisation; objective only)."""

    name = "cgmm-em"
    summary = "EM of cgmm's MixtureOfExpertsRegressor (affine experts, own initialisation)"
    Params = _PeerParams

    def unsupported_reason(self, model: moebench.Model) -> str | None:
        return _linear_moe_reason(model, self.name, None) or cgmm_available()

    def fit(self, problem, init, callback):
        reason = self.unsupported_reason(problem.model)
        if reason:
            raise UnsupportedProblem(reason)
        model, X, y = problem.model, problem.X, problem.y
        with torch.no_grad():
            if not callback(Iterate(0, init, objective=float(model.nll(init, X, y)))):
                return init
        res = cgmm_fit(np.asarray(X.cpu()), np.asarray(y.cpu()), model.n_experts,
                       self.params.iterations)
        # cgmm's parameters are in its own (affine) layout: the initial ones are returned.
        callback(Iterate(1, init, objective=-res.loglik / X.shape[0],
                         extras={"peer_seconds": res.seconds,
                                 "peer_iterations": float(res.iterations)}))
        return init


@moebench.hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register the peers."""
    register(FlexmixEM)
    register(CgmmEM)
