"""Joint EM on experts and gate (Jordan & Jacobs 1994).

Each iteration computes the responsibilities (E-step) and runs the model family's M-step:
closed-form weighted least squares for linear experts (safeguarded Gauss-Newton for sigmoid and
ReLU), damped Newton on the soft-label softmax regression for the gate, warm-started from the
current gate. No sub-step decreases the expected complete-data log-likelihood, so the training
NLL never increases.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from moebench import Algorithm, Callback, Iterate, Model, ParamDict, Problem, hookimpl
from moebench.errors import UnsupportedProblem

from ..models.em import EMParams, SupportsEM

__all__ = ["ExtrasHook", "JointEM", "JointEMParams", "relative_decrease", "run_em"]

#: ``hook(params_old, params_new, R) -> extras``: further diagnostics of one EM / mirror step.
ExtrasHook = Callable[[ParamDict, ParamDict, torch.Tensor], dict[str, float]]


class JointEMParams(EMParams):
    """Parameters of joint EM (``tol`` and the gate M-step's; see :class:`EMParams`)."""


class JointEM(Algorithm):
    """EM on all parameters jointly: E-step, expert M-step, exact gate M-step."""

    name = "joint-em"
    summary = "EM on experts and gate jointly (Jordan & Jacobs 1994)"
    Params = JointEMParams

    def unsupported_reason(self, model: Model) -> str | None:
        """``None`` for families implementing :class:`SupportsEM`."""
        return needs_m_step(self.name, model)

    @torch.no_grad()
    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Run EM from ``init`` until ``callback`` returns ``False`` or the NLL stalls.

        The callback's objective is the training NLL; ``extras`` carries the M-step's
        diagnostics (e.g. ``gate_newton_steps``).
        """
        return run_em(self, problem, init, callback, eta=1.0)


def run_em(
    algorithm: Algorithm,
    problem: Problem,
    init: ParamDict,
    callback: Callback,
    eta: float,
    *,
    extras_hook: ExtrasHook | None = None,
) -> ParamDict:
    """The EM / mirror-descent loop shared by ``joint-em`` and ``mirror-em``.

    Parameters
    ----------
    algorithm
        Provides ``unsupported_reason`` and its parameters (:class:`EMParams`: ``tol`` and the
        gate M-step's settings).
    problem
        Model (a :class:`SupportsEM`), data and generator.
    init
        Starting parameters (copied).
    callback
        Called with iteration 0 and after every step; the objective is the training NLL and
        ``extras`` the M-step's diagnostics.
    eta
        Step size of the mirror step (``1`` is EM).
    extras_hook
        Optional ``hook(params_old, params_new, R)`` whose returned diagnostics are added to
        ``extras``; it must not modify its arguments.

    Returns
    -------
    ParamDict
        The last parameters.
    """
    model = problem.model
    reason = algorithm.unsupported_reason(model)
    if reason:
        raise UnsupportedProblem(reason)
    X, y = problem.X, problem.y
    gate = algorithm.params.gate_options()
    params = {k: v.detach().clone() for k, v in init.items()}
    if eta == 1.0 and extras_hook is None:
        # EM proper: the family's em_step fuses the E-step with the M-step statistics.
        return _run_fused_em(algorithm, model, X, y, params, gate, callback)
    nll = float(model.nll(params, X, y))
    if not callback(Iterate(0, params, objective=nll)):
        return params
    t = 0
    while True:
        t += 1
        R = model.posterior(params, X, y)
        old = params
        params, extras = model.m_step(X, y, R, params, gate, eta=eta)
        if extras_hook is not None:
            extras = {**extras, **extras_hook(old, params, R)}
        new_nll = float(model.nll(params, X, y))
        if not callback(Iterate(t, params, objective=new_nll, extras=extras)) or \
                _stalled(algorithm, nll, new_nll):
            return params
        nll = new_nll


def _run_fused_em(algorithm: Algorithm, model, X: torch.Tensor, y: torch.Tensor,
                  params: ParamDict, gate, callback: Callback) -> ParamDict:
    """EM proper, one pass over the data per iteration for linear experts.

    The family's ``em_step`` at ``theta_t`` returns ``theta_{t+1}`` together with the NLL at
    ``theta_t`` (a by-product of its E-step), so the NLL reported with ``theta_t`` comes from
    the step that follows it instead of a separate pass: the step is computed before the
    callback that reports ``theta_t`` (and wasted once, after the last report).
    """
    following, following_extras = model.em_step(X, y, params, gate)
    nll = _nll(model, X, y, params, following_extras)
    if not callback(Iterate(0, params, objective=nll)):
        return params
    t = 0
    while True:
        t += 1
        params, extras = following, following_extras
        following, following_extras = model.em_step(X, y, params, gate)
        new_nll = _nll(model, X, y, params, following_extras)
        if not callback(Iterate(t, params, objective=new_nll, extras=extras)) or \
                _stalled(algorithm, nll, new_nll):
            return params
        nll = new_nll


def _stalled(algorithm: Algorithm, nll: float, new_nll: float) -> bool:
    """Stop: the NLL is not finite, or decreased by less than ``tol`` (relative)."""
    tol = algorithm.params.tol
    return not math.isfinite(new_nll) or (tol > 0 and relative_decrease(nll, new_nll) < tol)


def _nll(model, X: torch.Tensor, y: torch.Tensor, params: ParamDict, extras: dict) -> float:
    """The NLL at ``params`` from the step's by-product, else computed (families whose
    ``em_step`` does not report it)."""
    nll = extras.pop("nll", None)
    return float(nll) if nll is not None else float(model.nll(params, X, y))


def needs_m_step(algorithm: str, model: Model) -> str | None:
    """Why ``algorithm`` (an EM-family method) cannot fit ``model``, or ``None``."""
    if isinstance(model, SupportsEM):
        return None
    return f"{algorithm} needs a model family with an M-step; {model.name!r} has none"


def relative_decrease(old: float, new: float) -> float:
    """``(old - new) / |old|``."""
    return (old - new) / max(abs(old), 1e-300)


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`JointEM`."""
    register(JointEM)
