"""Baselines every MoE method must beat.

``linear-regression`` fits one ordinary least-squares line and uses it for every expert (the
gate then does not matter): the MoE with identical experts *is* linear regression, so it sits on
the same leaderboards as the MoE algorithms, scored by the same metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from moebench import Algorithm, Callback, Iterate, Model, ParamDict, Problem, hookimpl

from ..models.regression import RegressionMoE

__all__ = ["LinearRegression"]


class LinearRegression(Algorithm):
    """Ordinary least squares, shared by all experts; gate uniform.

    Iteration 0 reports the initialisation, iteration 1 the least-squares fit; then it stops
    (status ``done``). With estimated noise, the noise level is the residual standard deviation.
    """

    name = "linear-regression"
    summary = "one least-squares line for all experts: the floor every MoE must beat"

    def unsupported_reason(self, model: Model) -> str | None:
        if not isinstance(model, RegressionMoE):
            return f"{self.name} fits regression-moe only, not {model.name!r}"
        if model.params.activation != "linear":
            return f"{self.name} needs linear experts (activation={model.params.activation!r})"
        return None

    @torch.no_grad()
    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        model = problem.model
        assert isinstance(model, RegressionMoE)
        params = {k: v.clone() for k, v in init.items()}
        if not callback(Iterate(0, params, objective=float(model.nll(params, problem.X,
                                                                      problem.y)))):
            return params
        F = model.features(problem.X)
        # Normal equations by Cholesky (deterministic, unlike LAPACK's lstsq across threads),
        # with a 1e-12 relative ridge so that constant or collinear columns (naval) are solvable.
        G = F.T @ F
        G = G + 1e-12 * G.diagonal().mean() * torch.eye(G.shape[0], dtype=G.dtype,
                                                          device=G.device)
        beta = torch.cholesky_solve((F.T @ problem.y)[:, None], torch.linalg.cholesky(G))[:, 0]
        k = model.n_experts
        params = {"A": beta.expand(k, -1).clone(), "W": torch.zeros_like(init["W"]),
                  "log_sigma": init["log_sigma"].clone()}
        if model.params.noise != "known":
            residual = float((problem.y - F @ beta).square().mean())
            params["log_sigma"] = torch.full_like(init["log_sigma"], 0.5 * math.log(
                max(residual, 1e-300)))
        callback(Iterate(1, params, objective=float(model.nll(params, problem.X, problem.y))))
        return params


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`LinearRegression`."""
    register(LinearRegression)
