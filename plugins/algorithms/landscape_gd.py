"""landscape-gd: gradient descent on two designed losses (Makkuva, Oh, Kannan & Viswanath,
"Learning in Gated Neural Networks", AISTATS 2020), **reconstructed** from
``NOTES-makkuva-2020.md`` (the paper's body was not available): not the authors' code, and its
constants (``mu``, ``lambda_``, ``delta``, step sizes, iterations) are this reconstruction's
choices, exposed as parameters.

Stage 0 solves the output transforms ``P_4``, ``P_2`` (:mod:`.landscape_moments`). Stage 1 runs
full-batch gradient descent on the empirical landscape loss ``L_4(A)``, whose population minima
are the experts up to permutation, sign and scale (notes, section 3.2); the columns are then
renormalised and their signs fixed by ``E[y <a_i, x>] > 0`` (for the increasing activations
linear, sigmoid and ReLU, ``E[y <a, x>] = E[g'(Z)] sum_i q_i <a_i*, a>`` under the notes'
assumptions, so the true sign gives a positive value). Stage 2 runs gradient descent on the
conditional NLL ``L_log(W)`` with the experts frozen (notes, section 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from moebench import Algorithm, Callback, Iterate, Model, ParamDict, Params, Problem, hookimpl
from moebench.errors import UnsupportedProblem

from ..models.regression import RegressionMoE
from .joint_em import relative_decrease
from .landscape_moments import (
    QuadratureRule,
    Whitening,
    landscape_loss,
    landscape_transform,
    second_moment_whitening,
)

__all__ = ["LandscapeGD", "LandscapeGDParams", "descent_step", "unit_signed_rows"]

#: Halvings of the step size before a gradient step counts as stalled.
_MAX_HALVINGS = 30


class LandscapeGDParams(Params):
    """Parameters of landscape-gd; every default is this reconstruction's choice (tuned on
    synthetic data with orthonormal experts and orthogonal gating), not a value of the paper."""

    mu: float = Field(0.5, ge=0, description="weight of the diagonal reward -mu sum_i "
                      "E[Q4](a_i, a_i, a_i, a_i) in L_4 (reconstruction's choice)")
    lambda_: float = Field(10.0, gt=0, description="weight of the scale penalty lambda sum_i "
                           "(E[Q2](a_i, a_i) - 1)^2 in L_4 (reconstruction's choice)")
    delta: float = Field(1e-3, ge=0, description="ridge (delta / 2) ||A||_F^2 in L_4 "
                         "(reconstruction's choice)")
    expert_lr: float = Field(0.5, gt=0, description="step size of gradient descent on L_4 "
                             "(stage 1; reconstruction's choice)")
    expert_iters: int = Field(300, ge=0, description="maximum gradient steps on L_4 (stage 1)")
    gate_lr: float = Field(5.0, gt=0, description="step size of gradient descent on the "
                           "conditional NLL L_log(W) (stage 2; reconstruction's choice)")
    gate_iters: int = Field(300, ge=0, description="maximum gradient steps on L_log (stage 2)")
    tol: float = Field(1e-6, ge=0, description="stage 1 ends when a step moves A by at most "
                       "tol relative to ||A||_F; stage 2 (and fit) ends when the relative "
                       "decrease of L_log is at most tol (0: only once a step changes nothing; "
                       "both stages also end at their iteration caps)")
    expert_start: Literal["init", "gaussian"] = Field(
        "init", description="stage-1 start: the experts of the shared initialisation (init) or "
        "a fresh N(0, 1/d) matrix drawn with the problem's generator (gaussian)")
    center: bool = Field(True, description="centre P4(y) and P2(y) by their sample means before "
                         "weighting the score tensors (a control variate: E[S(x)] = 0, so the "
                         "population loss is unchanged)")
    whiten: bool = Field(
        True, description="run L_4 in the coordinates whitened by E^[Q2] = sum_i q_i a_i a_i^T "
        "(k x k unknowns; not in the notes: makes non-orthonormal experts orthonormal and "
        "removes the flat directions outside their span); False: the notes' L_4 on A directly, "
        "whose minima are the experts only when they are orthonormal")
    quadrature: QuadratureRule = Field(
        "composite", description="rule for the transform coefficients: composite Gauss-Legendre "
        "(exact across the ReLU kink) or the notes' 80-node gauss-hermite")


class LandscapeGD(Algorithm):
    """Experts by gradient descent on the landscape loss ``L_4``, then the gate by gradient
    descent on the likelihood with the experts frozen (a reconstruction of Makkuva et al. 2020).

    Fits :class:`RegressionMoE` without intercept (inputs assumed ``N(0, I)``: the moments use
    the standard Gaussian's score functions whatever the data). The noise level is read from
    the initial ``log_sigma`` (the model's ``sigma``) and stays fixed. Iteration 0 reports
    ``init``; each further iteration is one gradient step of stage 1 (reporting the renormalised,
    sign-fixed experts with the initial gate) or of stage 2. The objective is the training NLL
    of the reported parameters; ``extras`` has ``phase`` (1 or 2) and, in stage 1, ``landscape``
    (the value of ``L_4``).
    """

    name = "landscape-gd"
    summary = ("GD on a landscape loss for the experts, then on the likelihood for the gate "
               "(reconstruction of Makkuva et al. 2020)")
    Params = LandscapeGDParams

    def unsupported_reason(self, model: Model) -> str | None:
        """Why ``model`` cannot be fitted, or ``None``."""
        if not isinstance(model, RegressionMoE):
            return (f"{self.name} fits the regression MoE of Makkuva et al. only, not "
                    f"{model.name!r}")
        if model.params.intercept:
            return (f"{self.name} assumes x ~ N(0, I) without intercept (its moments use the "
                    "Gaussian score functions); set intercept=False")
        if model.n_experts > model.n_features:
            return (f"{self.name} needs k <= d (got k={model.n_experts}, "
                    f"d={model.n_features}): the experts are orthonormal in the notes' model")
        return None

    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Stage 1 (landscape GD on the experts), then stage 2 (GD on the gate).

        Parameters
        ----------
        problem
            Model, data and generator (used only by ``expert_start='gaussian'``).
        init
            Starting parameters: ``A`` starts stage 1 (``expert_start='init'``), ``W`` stage 2,
            ``log_sigma`` gives the known noise level.
        callback
            Called at iteration 0 and after every gradient step; ``False`` stops.

        Returns
        -------
        ParamDict
            The final parameters.
        """
        model = problem.model
        reason = self.unsupported_reason(model)
        if reason:
            raise UnsupportedProblem(reason)
        assert isinstance(model, RegressionMoE)
        density = problem.input_density
        if density is not None and not density.is_standard:
            raise UnsupportedProblem(f"{self.name} assumes x ~ N(0, I) (Gaussian score "
                                     "functions); these inputs are a Gaussian mixture")
        params = {k: v.detach().clone() for k, v in init.items()}
        params["W"] = params["W"] - params["W"][-1:]
        self._t, self._last = 0, params
        if not callback(Iterate(0, params, objective=float(model.nll(params, problem.X,
                                                                     problem.y)))):
            return params
        result = self._experts(problem, params, callback)
        if result is None:
            return self._last
        return self._gate(problem, result, callback)

    # ------------------------------------------------------------------ stage 1

    def _weights(self, problem: Problem, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample weights ``P_4(y) / c4`` and ``P_2(y) / c2`` (centred with ``center``)."""
        model = problem.model
        assert isinstance(model, RegressionMoE)
        tr = landscape_transform(model.params.activation, sigma, self.params.quadrature)
        y = problem.y
        w4, w2 = tr.p4(y) / tr.c4, tr.p2(y) / tr.c2
        if self.params.center:
            w4, w2 = w4 - w4.mean(), w2 - w2.mean()
        return w4, w2

    def _expert_start(self, problem: Problem, params: ParamDict,
                      whitening: Whitening | None) -> torch.Tensor:
        """The stage-1 start: ``init``'s experts or a fresh ``N(0, 1/d)`` matrix, projected on
        the whitening's basis (rows in ``R^k``) when whitening."""
        A = params["A"]
        if self.params.expert_start == "gaussian":
            k, d = A.shape
            gen = problem.generator
            A = torch.randn((k, d), generator=gen, device=gen.device, dtype=torch.float64)
            A = (A / math.sqrt(d)).to(params["A"].device, params["A"].dtype)
        if whitening is None:
            return A.clone()
        return _unit_rows(A @ whitening.basis)

    def _experts(self, problem: Problem, params: ParamDict, callback: Callback) -> ParamDict | None:
        """Stage 1: GD on ``L_4``; returns the parameters with the estimated experts, or
        ``None`` when the callback said stop (``self._last`` holds the last reported ones)."""
        p = self.params
        model, X, y = problem.model, problem.X, problem.y
        sigma = float(torch.exp(params["log_sigma"][0]))
        w4, w2 = self._weights(problem, sigma)
        whitening = second_moment_whitening(X, w2, model.n_experts) if p.whiten else None

        def loss(V: torch.Tensor) -> torch.Tensor:
            A = V if whitening is None else V @ whitening.whiten.T
            return landscape_loss(A, X, w4, w2, p.mu, p.lambda_, p.delta)

        # whitened, the lambda term is sum_i (||u_i||^2 - 1)^2 exactly: keep the rows unit
        project = _identity if whitening is None else _unit_rows
        V = self._expert_start(problem, params, whitening)
        current, lr = params, p.expert_lr
        for _ in range(p.expert_iters):
            V_new, value, lr = descent_step(loss, V, min(2 * lr, p.expert_lr), project)
            estimate = V_new if whitening is None else V_new @ whitening.unwhiten.T
            current = {**params, "A": unit_signed_rows(estimate, X, y)}
            extras = {"phase": 1.0, "landscape": value, "step_size": lr}
            if not self._report(current, float(model.nll(current, X, y)), extras, callback):
                return None
            if float((V_new - V).norm()) <= p.tol * float(V_new.norm()):
                break
            V = V_new
        return current

    # ------------------------------------------------------------------ stage 2

    def _gate(self, problem: Problem, params: ParamDict, callback: Callback) -> ParamDict:
        """Stage 2: GD on ``L_log(W)`` over the free rows ``W[:-1]``, the experts frozen."""
        p = self.params
        model, X, y = problem.model, problem.X, problem.y
        assert isinstance(model, RegressionMoE)
        expert_ld = model.expert_log_densities(params, X, y).detach()
        F = model.features(X)
        free = params["W"][:-1].clone()
        last = params["W"][-1:]

        def nll(free_rows: torch.Tensor) -> torch.Tensor:
            logits = torch.cat([free_rows, last], dim=0)
            gate_lp = torch.log_softmax(F @ logits.T, dim=1)
            return -torch.logsumexp(gate_lp + expert_ld, dim=1).mean()

        old, lr = float(nll(free)), p.gate_lr
        for _ in range(p.gate_iters):
            free, new, lr = descent_step(nll, free, min(2 * lr, p.gate_lr), _identity)
            current = {**params, "W": torch.cat([free, last], dim=0)}
            if not self._report(current, new, {"phase": 2.0, "step_size": lr}, callback):
                return current
            if relative_decrease(old, new) <= p.tol:
                return current
            old = new
        return self._last

    def _report(self, params: ParamDict, objective: float, extras: dict[str, float],
                callback: Callback) -> bool:
        """One report with the next iteration number; remembers ``params`` as the last."""
        self._t += 1
        self._last = params
        return bool(callback(Iterate(self._t, params, objective=objective, extras=extras)))


def unit_signed_rows(A: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rows of ``A`` renormalised to unit norm, each with the sign that makes
    ``mean(y <a_i, x>)`` non-negative.

    Parameters
    ----------
    A
        Expert estimates as rows, shape ``(k, d)``.
    X, y
        Inputs ``(n, d)`` and targets ``(n,)``.

    Returns
    -------
    torch.Tensor
        A new tensor of the same shape (rows of zero norm stay zero).
    """
    A = A.detach()
    unit = A / A.norm(dim=1, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
    corr = (y @ X @ unit.T) / X.shape[0]
    sign = torch.where(corr < 0, -1.0, 1.0).to(A.dtype)
    return unit * sign[:, None]


def descent_step(
    loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, lr: float,
    project: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, float, float]:
    """One (projected) gradient step with backtracking: the step size is halved until the loss
    does not increase.

    Parameters
    ----------
    loss
        Differentiable scalar function.
    x
        Current point (not modified).
    lr
        First step size tried.
    project
        Map applied to each candidate (identity, or onto unit rows).

    Returns
    -------
    tuple
        The new point (``x`` itself when no step size in ``_MAX_HALVINGS`` halvings decreases
        the loss), its loss value and the step size taken.
    """
    var = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = loss(var)
        (grad,) = torch.autograd.grad(value, var)
    current = float(value.detach())
    for _ in range(_MAX_HALVINGS):
        candidate = project(x - lr * grad)
        new = float(loss(candidate))
        if new <= current:  # (False for NaN)
            return candidate, new, lr
        lr /= 2
    return x, current, lr


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`LandscapeGD`."""
    register(LandscapeGD)
