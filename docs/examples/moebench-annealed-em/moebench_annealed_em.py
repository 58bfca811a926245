"""Deterministic-annealing EM, and a piecewise-linear dataset to try it on.

Written from docs/plugins.md alone (see README.md for what the guide left unclear).
"""

import math

import numpy as np
import torch
from pydantic import Field

import moebench
from moebench import Iterate
from moebench.api import EMParams, SupportsEM, relative_decrease


class AnnealedEMParams(EMParams):
    """EM's parameters (tol and the gate M-step's) and the annealing schedule."""

    beta0: float = Field(0.3, gt=0, le=1, description="initial inverse temperature of the "
                         "responsibilities (1: plain EM)")
    growth: float = Field(1.5, gt=1, description="beta is multiplied by this after every "
                          "iteration, up to 1")


class AnnealedEM(moebench.Algorithm):
    """EM whose E-step uses tempered responsibilities ``R^beta`` (normalised), beta rising to 1.

    The objective is the training NLL; ``extras`` carries ``beta``. The convergence criterion
    (relative NLL decrease below ``tol``) applies once beta has reached 1.
    """

    name = "annealed-em"
    summary = "deterministic-annealing EM: tempered E-steps, temperature decreasing to 1"
    Params = AnnealedEMParams

    def unsupported_reason(self, model):
        if not isinstance(model, SupportsEM):
            return f"{self.name} needs a model family with an M-step; {model.name!r} has none"
        return None

    @torch.no_grad()
    def fit(self, problem, init, callback):
        model, X, y = problem.model, problem.X, problem.y
        gate = self.params.gate_options()
        beta = float(self.params.beta0)
        params = {k: v.clone() for k, v in init.items()}
        nll = float(model.nll(params, X, y))
        if not callback(Iterate(0, params, objective=nll, extras={"beta": beta})):
            return params
        t = 0
        while True:
            t += 1
            R = model.posterior(params, X, y)
            if beta < 1:
                R = torch.softmax(beta * torch.log(R.clamp_min(1e-300)), dim=1)
            params, extras = model.m_step(X, y, R, params, gate)
            new_nll = float(model.nll(params, X, y))
            extras = {k: float(v) for k, v in extras.items()}
            extras["beta"] = beta
            if not callback(Iterate(t, params, objective=new_nll, extras=extras)):
                return params
            if not math.isfinite(new_nll):
                return params
            if beta >= 1 and relative_decrease(nll, new_nll) < self.params.tol:
                return params
            beta = min(1.0, beta * self.params.growth)
            nll = new_nll


class PiecewiseLinear(moebench.Dataset):
    """``y = a_1 . x`` where ``x_0 > 0``, else ``a_2 . x``, plus Gaussian noise."""

    name = "piecewise-linear"
    summary = "two linear regimes split by the sign of the first input"
    task = "regression"

    class Params(moebench.Params):
        n: int = Field(600, ge=10, description="training rows")
        n_test: int = Field(200, ge=1, description="test rows")
        d: int = Field(3, ge=1, description="input dimension")
        noise: float = Field(0.2, gt=0, description="noise standard deviation")

    def load(self, seed):
        p = self.params
        rng = np.random.default_rng(seed)
        a = rng.normal(size=(2, p.d))
        X = rng.normal(size=(p.n + p.n_test, p.d))
        y = np.where(X[:, 0] > 0, X @ a[0], X @ a[1]) + p.noise * rng.normal(size=X.shape[0])
        return moebench.Data(X[: p.n], y[: p.n], X[p.n :], y[p.n :], task="regression",
                             model=moebench.ModelSpec("regression-moe",
                                                      {"k": 2, "noise": "shared"}),
                             meta={"source": "moebench-annealed-em (synthetic)"})


@moebench.hookimpl
def register_algorithms(register):
    register(AnnealedEM)


@moebench.hookimpl
def register_datasets(register):
    register(PiecewiseLinear)
