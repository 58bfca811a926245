"""Gradient descent (or Adam) on the negative log-likelihood, with autograd.

Generic over model families: the tensors to optimise are the model's ``free_params(params)``
(unconstrained tensors) and ``from_free(free, params)`` maps them back, differentiably, to the
model's layout (see :class:`moebench.Model`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from moebench import Algorithm, Callback, Iterate, Model, ParamDict, Params, Problem, hookimpl

__all__ = ["GradientDescent"]


class _Parametrisation:
    """Free leaf tensors of a model and the map from them to its full parameters."""

    def __init__(self, model: Model, init: ParamDict):
        self.model = model
        self.fixed = {k: v.detach().clone() for k, v in init.items()}
        free = model.free_params(self.fixed)
        self._build = lambda f: model.from_free(f, self.fixed)
        self.free = {k: v.detach().clone().requires_grad_(True) for k, v in free.items()}

    def params(self) -> ParamDict:
        """Full parameters, differentiable in the free tensors."""
        return self._build(self.free)

    def detached(self) -> ParamDict:
        with torch.no_grad():
            return {k: v.detach().clone() for k, v in self.params().items()}


class GradientDescent(Algorithm):
    """First-order optimisation of the mean training NLL (full batch or mini-batches)."""

    name = "gd"
    summary = "gradient descent on the NLL with autograd"

    class Params(Params):
        """Parameters of gradient descent."""

        lr: float = Field(0.1, gt=0, description="learning rate (step size)")
        optimizer: Literal["sgd", "adam"] = Field(
            "sgd", description="torch optimiser: plain gradient descent (sgd) or adam"
        )
        batch_size: int | None = Field(
            None,
            ge=1,
            description="mini-batch size; None = full batch. One iteration is one optimiser step "
            "for full batch, one epoch (a pass over a random permutation) for mini-batches",
        )
        tol: float = Field(
            0.0,
            ge=0,
            description="stop when the relative decrease of the training NLL over an iteration "
            "falls below tol (0 disables)",
        )

    def _optimizer(self, tensors: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.params.optimizer == "adam":
            return torch.optim.Adam(tensors, lr=self.params.lr)
        return torch.optim.SGD(tensors, lr=self.params.lr)

    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Optimise from ``init``; reports the full training NLL after every iteration.

        Parameters
        ----------
        problem
            Model, training data and the generator that draws mini-batches.
        init
            Starting parameters.
        callback
            Called at iteration 0 and after every iteration (see the ``batch_size`` parameter).

        Returns
        -------
        ParamDict
            The last parameters (detached).
        """
        model, X, y = problem.model, problem.X, problem.y
        n = X.shape[0]
        par = _Parametrisation(model, init)
        opt = self._optimizer(list(par.free.values()))
        full_batch = self.params.batch_size is None or self.params.batch_size >= n

        loss = model.nll(par.params(), X, y)
        nll = float(loss.detach())
        if not callback(Iterate(0, par.detached(), objective=nll)):
            return par.detached()
        t = 0
        while True:
            t += 1
            if full_batch:
                # ``loss`` is the NLL at the current parameters, computed at the end of the last
                # iteration: one forward and one backward pass per step.
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                gen = problem.generator
                perm = torch.randperm(n, generator=gen, device=gen.device).to(X.device)
                for start in range(0, n, self.params.batch_size):
                    idx = perm[start : start + self.params.batch_size]
                    opt.zero_grad(set_to_none=True)
                    model.nll(par.params(), X[idx], y[idx]).backward()
                    opt.step()
            if full_batch:
                loss = model.nll(par.params(), X, y)
                new_nll = float(loss.detach())
            else:
                with torch.no_grad():
                    new_nll = float(model.nll(par.params(), X, y))
            current = par.detached()
            if not callback(Iterate(t, current, objective=new_nll)):
                return current
            if not math.isfinite(new_nll):
                return current
            if self.params.tol > 0 and (nll - new_nll) / max(abs(nll), 1e-300) < self.params.tol:
                return current
            nll = new_nll


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`GradientDescent`."""
    register(GradientDescent)
