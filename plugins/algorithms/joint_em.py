"""Joint EM on experts and gate (Jordan & Jacobs 1994).

Each iteration computes the responsibilities (E-step) and runs the model family's M-step:
closed-form weighted least squares for linear experts (safeguarded Gauss-Newton for sigmoid and
ReLU), damped Newton on the soft-label softmax regression for the gate, warm-started from the
current gate. No sub-step decreases the expected complete-data log-likelihood, so the training
NLL never increases. Once the NLL stalls, a final phase with a much smaller gate ridge removes
the ridge's bias, so that EM stops at the maximum likelihood (:class:`JointEMParams`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Self

import torch
from pydantic import Field, model_validator

from moebench import Algorithm, Callback, Iterate, Model, ParamDict, Problem, hookimpl
from moebench.em import EMParams, GateOptions, SupportsEM, check_gate_safeguard
from moebench.errors import UnsupportedProblem

__all__ = ["ExtrasHook", "JointEM", "JointEMParams", "relative_decrease", "run_em", "subsample"]

#: ``hook(params_old, params_new, R) -> extras``: further diagnostics of one EM / mirror step.
ExtrasHook = Callable[[ParamDict, ParamDict, torch.Tensor], dict[str, float]]


class JointEMParams(EMParams):
    """Parameters of joint EM: those of :class:`EMParams` and the final ridge phase.

    Two defaults differ from the rest of the EM family, so that joint EM with default settings
    stops at the (unpenalised) maximum-likelihood estimate to about ``1e-9`` relative NLL
    (``measurements/RESULTS.md``, "Peers side by side"):

    ``tol = 1e-10``
        EM converges linearly with a rate ``rho``: stopping once an iteration lowers the NLL by
        less than ``tol`` (relative) leaves about ``tol * rho / (1 - rho)`` to gain: ``1e-8``
        at ``tol = 1e-8`` on the peers' problem, ``5e-8`` to ``1.4e-7`` with overlapping
        experts. ``1e-10`` leaves ``< 1e-9`` where ``rho <= 0.9``, for a few more iterations
        (33 -> 42 on the peers' problem); very slow EM (``rho > 0.99``) can still stop more
        than ``1e-8`` short.
    ``gate_ridge_final = 1e-10``
        The gate ridge ``lambda`` moves EM's fixed point to the penalised maximum, whose NLL
        exceeds the maximum likelihood by ``~lambda^2 / 2 * W^T H^{-1} W`` (``H`` the Hessian
        of the mean NLL in ``W``), whatever ``n``: negligible for a diffuse gate but ``3e-8``
        to ``9e-8`` (relative) at ``gate_ridge = 1e-6`` for a sharp one (gate norm 5, noise
        0.1), ``3e-5`` at gate norm 20.
        Lowering ``gate_ridge`` itself would also weaken the safeguard in the early
        iterations, when the posteriors of a poor start can be nearly separable; instead EM
        runs with ``gate_ridge`` until it stalls, then continues with ``gate_ridge_final``
        until it stalls again. The ridge stays positive, so every gate M-step keeps a finite
        maximiser (``||W||_F^2 <= 2 log(k) / lambda``). With ``tol = 0`` EM never stalls, so
        the final phase never starts.
    """

    tol: float = Field(
        1e-10, ge=0, description="stop when the relative decrease of the training NLL falls "
        "below tol (0 disables); 1e-10 leaves < 1e-9 (relative) to the maximum likelihood "
        "where EM converges at rate <= 0.9"
    )
    gate_ridge_final: float | None = Field(
        1e-10, ge=0, description="gate ridge of a final phase: once the NLL stalls (tol) with "
        "gate_ridge, EM continues with this ridge until it stalls again, so that it stops at "
        "the maximum likelihood rather than the penalised one (None, or a value >= "
        "gate_ridge, disables the phase; so does tol = 0; 0 needs gate_radius)"
    )

    train_rows: int | None = Field(
        None, ge=1, description="fit a random subsample of this many training rows (drawn "
        "with the problem's generator), e.g. the memory online-em holds; None: every row"
    )

    @model_validator(mode="after")
    def _check_final_ridge(self) -> Self:
        if self.gate_ridge_final is not None:
            check_gate_safeguard(self.gate_ridge_final, self.gate_radius, "gate_ridge_final")
        return self

    def final_gate_options(self) -> GateOptions | None:
        """The gate settings of the final phase, or ``None`` when there is none."""
        final = self.gate_ridge_final
        if final is None or final >= self.gate_ridge:
            return None
        return replace(self.gate_options(), ridge=final)


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
        return run_em(self, subsample(problem, self.params.train_rows), init, callback,
                      eta=1.0, final_gate=self.params.final_gate_options())


def run_em(
    algorithm: Algorithm,
    problem: Problem,
    init: ParamDict,
    callback: Callback,
    eta: float,
    *,
    extras_hook: ExtrasHook | None = None,
    final_gate: GateOptions | None = None,
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
    final_gate
        Gate settings of a final phase (``joint-em``: a smaller ridge): when the NLL first
        stalls (relative decrease below ``tol``), the loop continues with them until it stalls
        again. ``None``: stop at the first stall.

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
        return _run_fused_em(algorithm, model, X, y, params, gate, callback, final_gate)
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
        if not callback(Iterate(t, params, objective=new_nll, extras=extras)):
            return params
        if _stalled(algorithm, nll, new_nll):
            if final_gate is None or not math.isfinite(new_nll):
                return params
            gate, final_gate = final_gate, None
        nll = new_nll


def _run_fused_em(algorithm: Algorithm, model, X: torch.Tensor, y: torch.Tensor,
                  params: ParamDict, gate: GateOptions, callback: Callback,
                  final_gate: GateOptions | None = None) -> ParamDict:
    """EM proper, one pass over the data per iteration for linear experts.

    The family's ``em_step`` at ``theta_t`` returns ``theta_{t+1}`` together with the NLL at
    ``theta_t`` (a by-product of its E-step), so the NLL reported with ``theta_t`` comes from
    the step that follows it instead of a separate pass: the step is computed before the
    callback that reports ``theta_t`` (and wasted once, after the last report). When the NLL
    stalls and ``final_gate`` is set, the step from ``theta_t`` is computed again with
    ``final_gate`` (one more pass, once), and so are all the steps after it.
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
        if not callback(Iterate(t, params, objective=new_nll, extras=extras)):
            return params
        if _stalled(algorithm, nll, new_nll):
            if final_gate is None or not math.isfinite(new_nll):
                return params
            gate, final_gate = final_gate, None
            # theta_{t+1} came from the old settings: the next stall test would compare two
            # iterates of the first phase, so take the step again with the new ones.
            following, following_extras = model.em_step(X, y, params, gate)
            following_extras.pop("nll", None)
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


def subsample(problem: Problem, rows: int | None) -> Problem:
    """``problem`` with a random subsample of ``rows`` training rows (all when ``None`` or
    when there are no more), drawn with the problem's generator."""
    n = int(problem.X.shape[0])
    if rows is None or rows >= n:
        return problem
    g = problem.generator
    idx = torch.randperm(n, generator=g, device=g.device)[:rows].to(problem.X.device)
    return replace(problem, X=problem.X.index_select(0, idx), y=problem.y.index_select(0, idx))


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
