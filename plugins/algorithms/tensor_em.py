"""Tensor + gate EM (Makkuva et al. 2019, Algorithms 1-2).

Stage 1 (Algorithm 1) estimates the regressors ``a_i`` directly from the CQT cross-moment tensors
``T2``, ``T3`` (see :mod:`moebench_plugins.models.spectral`). Stage 2 (Algorithm 2) runs EM on the
gate only, the experts held at the tensor estimate: E-step the posteriors from the model's gate
log-probabilities plus the (fixed) expert log-densities, M-step the exact soft-label softmax
regression solved by damped Newton (over the norm ball of Makkuva et al. when
``gate_radius`` is set). Optionally (``refine``) joint EM on all parameters continues from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from moebench import Algorithm, Callback, Iterate, Model, ParamDict, Problem, hookimpl
from moebench.em import EMParams
from moebench.errors import UnsupportedProblem

from ..models.gate import fit_softmax_gate, project_rows
from ..models.regression import RegressionMoE
from ..models.spectral import cqt_coefficients, estimate_regressors, moment_gate_k2, score_for
from .joint_em import relative_decrease

__all__ = ["TensorEM", "TensorEMParams"]

#: Cap on the gate norm of the moment estimate when no ``gate_radius`` is set.
_MOMENT_MAX_NORM = 10.0


class TensorEMParams(EMParams):
    """Parameters of tensor-em (plus ``tol`` and the gate M-step's, see :class:`EMParams`)."""

    decomposition: Literal["tpm", "orth-als"] = Field(
        "tpm",
        description="decomposition of the whitened third moment: tensor power method with "
        "restarts and deflation (tpm) or orthogonalized ALS (orth-als, Sharan & Valiant 2017)",
    )
    n_restarts: int = Field(10, ge=1, description="random restarts per component (tpm only)")
    n_power_iter: int = Field(
        100, ge=1, description="iterations of the tensor decomposition (per phase for tpm)"
    )
    chunk_size: int = Field(
        65536, ge=1, description="rows per chunk when accumulating the moment tensors"
    )
    gate_init: Literal["random", "moments"] = Field(
        "random",
        description="gate start: the shared random initialisation (random) or the k=2 "
        "method-of-moments estimate (moments; k=2 only)",
    )
    refine: bool = Field(
        False,
        description="continue with joint EM on all parameters once gate EM has converged "
        "(relative NLL decrease < tol) or has run gate_max_iter iterations",
    )
    gate_max_iter: int | None = Field(
        50,
        ge=1,
        description="with refine: gate-EM iterations after which joint EM starts even if gate "
        "EM has not converged, so that both phases get part of the budget (None: only once "
        "converged; joint EM may then never run). A cell whose joint phase did not run says so "
        "in its message and has extra.joint = 0 on its final row",
    )


class TensorEM(Algorithm):
    """Regressors by tensor decomposition, then EM on the gate with the experts fixed.

    Fits :class:`RegressionMoE`. The CQT needs the noise level ``sigma``: it is read from the
    initial ``log_sigma`` (the runner sets it from the model's ``sigma``), which is the truth for
    ``noise='known'`` and the user's guess otherwise; during gate EM the experts and the noise
    stay fixed (estimated noise is updated only by ``refine``). With ``intercept=True`` the
    moments use the raw inputs and the expert intercepts start at zero: on real data, whose
    inputs are not Gaussian, the tensor stage is then a heuristic start, as in Makkuva et al.'s
    real-data experiments, and ``refine`` fits the scale and intercepts.
    The moment tensors use the score functions of ``problem.input_density`` (standard Gaussian
    when the dataset does not know its input density).
    Iteration 0 reports the tensor estimate of ``A`` with the initial gate (the tensor stage is
    timed as part of it); each further iteration is one gate-EM step (or, with ``refine``, one
    joint-EM step after gate EM has converged or run ``gate_max_iter`` iterations). The
    objective is the training NLL; ``extras`` has ``joint`` (1 in the joint-EM phase) and
    ``gate_iters`` (gate-EM iterations so far). With ``refine``, a run stopped before the joint
    phase started gets a note in its cell's message.
    """

    name = "tensor-em"
    summary = "regressors by CQT tensor decomposition, gate by EM (Makkuva et al. 2019)"
    Params = TensorEMParams

    def unsupported_reason(self, model: Model) -> str | None:
        """Why ``model`` cannot be fitted, or ``None``."""
        if not isinstance(model, RegressionMoE):
            return f"{self.name} fits the regression MoE of Makkuva et al. only, not {model.name!r}"
        if model.n_experts > model.n_features:
            return (
                f"{self.name} needs k <= d (got k={model.n_experts}, d={model.n_features}): the "
                "regressors must be linearly independent"
            )
        if self.params.gate_init == "moments" and model.n_experts != 2:
            return (
                f"{self.name}: gate_init='moments' is only defined for k = 2 experts "
                f"(got k={model.n_experts}); use gate_init='random'"
            )
        return None

    @torch.no_grad()
    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Tensor stage, then gate EM (and joint EM with ``refine``) until stopped.

        Parameters
        ----------
        problem
            Model, data and generator (used for the decomposition's random starts).
        init
            Initial parameters: ``log_sigma`` gives the known noise level; ``W`` is the gate
            start for ``gate_init='random'``; ``A`` is not used.
        callback
            Called at iteration 0 and after every EM step; ``False`` stops.

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
        params = self._tensor_stage(problem, init)
        # With the experts fixed, log p(y, z | x) = gate_log_probs + (constant) expert densities:
        # one log-softmax per iteration gives the NLL and the next E-step's posteriors.
        expert_ld = model.expert_log_densities(params, problem.X, problem.y)
        joint_lp = model.gate_log_probs(params, problem.X) + expert_ld
        nll = _nll(joint_lp)
        # "joint" (whether the joint-EM phase runs) exists only with refine: without it there
        # is no such phase, and a 0 would read as a phase that did not run
        first = {"joint": 0.0, "gate_iters": 0.0} if self.params.refine else {"gate_iters": 0.0}
        if not callback(Iterate(0, params, objective=nll, extras=first)):
            if self.params.refine:
                self.note("refine: joint EM did not run (stopped at the tensor estimate)")
            return params
        return self._gate_then_joint_em(problem, params, expert_ld, joint_lp, nll, callback)

    def _tensor_stage(self, problem: Problem, init: ParamDict) -> ParamDict:
        """Algorithm 1: ``A`` by the CQT tensor decomposition, the gate start (:meth:`_gate_start`)
        and ``log_sigma`` from ``init`` (the noise level the moments assume)."""
        model = problem.model
        p = self.params
        X, y = problem.X, problem.y
        k = model.n_experts
        log_sigma = init["log_sigma"].detach().clone()
        sigma = float(torch.exp(log_sigma[0]))
        coeffs = cqt_coefficients(model.params.activation, sigma)
        density = problem.input_density
        if p.gate_init == "moments" and density is not None and not density.is_standard:
            raise UnsupportedProblem(
                f"{self.name}: gate_init='moments' assumes x ~ N(0, I); these inputs are a "
                "Gaussian mixture, use gate_init='random'"
            )
        est = estimate_regressors(
            X, y, k, coeffs, problem.generator,
            decomposition=p.decomposition, n_restarts=p.n_restarts,
            n_iter=p.n_power_iter, chunk_size=p.chunk_size, score=score_for(density),
        )
        A = est.A.to(model.device, model.dtype)
        if model.params.intercept:  # expert intercepts (last feature column) start at zero
            A = torch.cat([A, A.new_zeros(k, 1)], dim=1)
        W = self._gate_start(problem, init, A)
        return {"A": A, "W": W, "log_sigma": log_sigma}

    def _gate_start(self, problem: Problem, init: ParamDict, A: torch.Tensor) -> torch.Tensor:
        """The start of gate EM: ``init["W"]`` re-referenced to its last row, or the k=2 moment
        estimate (``gate_init='moments'``); projected into the ball when there is a radius."""
        model = problem.model
        p = self.params
        X, y = problem.X, problem.y
        k = model.n_experts
        if p.gate_init == "moments":
            max_norm = p.gate_radius if p.gate_radius is not None else _MOMENT_MAX_NORM
            W = moment_gate_k2(X, y, A[:, : X.shape[1]], model.params.activation,
                               max_norm=max_norm).to(model.device, model.dtype)
            if model.params.intercept:
                W = torch.cat([W, W.new_zeros(k, 1)], dim=1)
        else:
            W = init["W"].detach().clone()
            W = W - W[-1:]
        if p.gate_radius is not None:
            W = project_rows(W, p.gate_radius)  # Algorithm 2 starts inside the domain Omega
        return W

    def _gate_then_joint_em(
        self, problem: Problem, params: ParamDict, expert_ld: torch.Tensor,
        joint_lp: torch.Tensor, nll: float, callback: Callback,
    ) -> ParamDict:
        """Algorithm 2 from the tensor estimate: gate EM with the experts fixed (their
        log-densities ``expert_ld``), then, with ``refine``, joint EM, until stopped.

        ``joint_lp`` and ``nll`` are the joint log-probabilities and the NLL at ``params``.
        """
        model = problem.model
        p = self.params
        X, y = problem.X, problem.y
        F = model.features(X)
        t = 0
        joint = False
        gate_iters = 0

        def stopped() -> ParamDict:
            if p.refine and not joint:
                self.note(f"refine: joint EM did not run (gate EM used all {gate_iters} "
                          "iterations the budget left; lower gate_max_iter or raise max_iter)")
            return params

        while True:
            t += 1
            if joint:
                R = model.posterior(params, X, y)
                params, extras = model.m_step(X, y, R, params, self.params.gate_options())
                new_nll = float(model.nll(params, X, y))
            else:
                R = torch.softmax(joint_lp, dim=1)
                W, extras = self._gate_step(F, R, params["W"])
                params = {**params, "W": W}
                joint_lp = model.gate_log_probs(params, X) + expert_ld
                new_nll = _nll(joint_lp)
                gate_iters += 1
            extras = {**extras, "gate_iters": float(gate_iters),
                      **({"joint": float(joint)} if p.refine else {})}
            if not callback(Iterate(t, params, objective=new_nll, extras=extras)):
                return stopped()
            if not math.isfinite(new_nll):
                return stopped()
            converged = p.tol > 0 and relative_decrease(nll, new_nll) < p.tol
            if p.refine and not joint:
                if converged or (p.gate_max_iter is not None and gate_iters >= p.gate_max_iter):
                    joint = True
            elif converged:
                return params
            nll = new_nll

    def _gate_step(
        self, F: torch.Tensor, R: torch.Tensor, W_old: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Gate M-step (Makkuva et al., Algorithm 2, line 7) that never lowers the gate ``Q``.

        Maximises the ridge-penalised soft-label softmax regression by damped Newton, over
        ``||w_i|| <= gate_radius`` when set; as in ``RegressionMoE.m_step``, a result that lowers
        the unpenalised gate part of ``Q`` is refused, so the NLL cannot increase.
        """
        gate = self.params.gate_options()
        W, info = fit_softmax_gate(
            F, R, W_old, ridge=gate.ridge, max_steps=gate.max_steps, radius=gate.radius
        )
        if info.get("projected_start", False):
            old_q, new_q = _gate_q(F, R, W_old), _gate_q(F, R, W)
        else:
            # gate.py's J = Q / n - ridge / 2 ||W||^2 at both ends of the Newton solve.
            n = F.shape[0]
            old_q = n * (info["J0"] + 0.5 * gate.ridge * float(W_old.square().sum()))
            new_q = n * (info["J"] + 0.5 * gate.ridge * float(W.square().sum()))
        rejected = not (new_q >= old_q)
        if rejected:
            W = W_old.clone()
        return W, {"gate_newton_steps": float(info["steps"]), "gate_rejected": float(rejected)}


def _nll(joint_lp: torch.Tensor) -> float:
    """Mean negative log-likelihood from ``log p(y_n, z_n = i | x_n)``."""
    return float(-torch.logsumexp(joint_lp, dim=1).mean())


def _gate_q(F: torch.Tensor, R: torch.Tensor, W: torch.Tensor) -> float:
    """Unpenalised gate part of the EM objective, ``sum_n sum_i R_ni log softmax(W f_n)_i``."""
    logp = torch.log_softmax(F @ W.T, dim=1)
    return float(torch.where(R > 0, R * logp, torch.zeros_like(logp)).sum())


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`TensorEM`."""
    register(TensorEM)
