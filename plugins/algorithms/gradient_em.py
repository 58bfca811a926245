"""Gradient EM (Fruytier, Mokhtari, Sanghavi, ICML 2025, Algorithm 2).

Each iteration computes the responsibilities ``R`` at ``theta_t`` (E-step) and replaces the
M-step by one gradient-ascent step on ``Q(. | theta_t) / n`` for the experts and one for the gate,
separately, each with its own step size. The paper describes it as "define the EM Loss function
appropriately, and then perform a Gradient Step on the Gating parameters and the Expert parameters
separately" (experiment set-up of the paper).

Generic over :class:`~moebench.em.SupportsEM` families, by autograd on
``model.q_value``: the tensors updated are the model's free parameters (``free_params`` /
``from_free`` when it has them, so that ``W``'s last row stays 0 and a known noise stays fixed;
otherwise ``trainable``), assigned to the blocks of ``model.param_groups()``.

With ``step_rule="backtracking"`` each block's step is halved from its learning rate until the
Armijo condition on ``Q`` holds; then ``Q`` never decreases, and by the EM bound
``L(theta) <= L(theta_t) - (Q(theta | theta_t) - Q(theta_t | theta_t)) / n`` neither does the
training NLL ``L``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from moebench import Algorithm, Callback, Iterate, Model, ParamDict, Params, Problem, hookimpl
from moebench.em import SupportsEM
from moebench.errors import UnsupportedProblem

from .joint_em import relative_decrease

__all__ = ["GradientEM"]

_ARMIJO = 1e-4
_MAX_HALVINGS = 30


class _FreeParams:
    """The free leaf tensors of a model, their map back to its layout, and their blocks."""

    def __init__(self, model: SupportsEM, init: ParamDict):
        self.fixed = {k: v.detach().clone() for k, v in init.items()}
        if hasattr(model, "free_params") and hasattr(model, "from_free"):
            free = model.free_params(self.fixed)
            self._build = lambda f: model.from_free(f, self.fixed)
        else:
            names = model.trainable(self.fixed)
            free = {n: self.fixed[n] for n in names}
            self._build = lambda f: {**self.fixed, **f}
        self.free = {k: v.detach().clone() for k, v in free.items()}
        self.blocks = self._assign_blocks(model.param_groups())

    def build(self, free: dict[str, torch.Tensor]) -> ParamDict:
        """Full parameters from free tensors (differentiably)."""
        return self._build(free)

    def _assign_blocks(self, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        """Free tensor names per block: a free tensor belongs to the first block whose
        parameters depend on it (found by autograd); unclaimed ones join the experts."""
        leaves = {k: v.clone().requires_grad_(True) for k, v in self.free.items()}
        with torch.enable_grad():
            full = self.build(leaves)
            names = list(leaves)
            blocks: dict[str, list[str]] = {b: [] for b in groups}
            claimed: set[str] = set()
            for block, pnames in groups.items():
                outs = [full[p] for p in pnames if p in full and full[p].requires_grad]
                if not outs:
                    continue
                total = sum(o.sum() for o in outs)
                grads = torch.autograd.grad(
                    total, [leaves[n] for n in names], allow_unused=True, retain_graph=True
                )
                for n, g in zip(names, grads, strict=True):
                    if g is not None and n not in claimed:
                        blocks[block].append(n)
                        claimed.add(n)
        rest = [n for n in names if n not in claimed]
        if rest:
            blocks.setdefault("experts", []).extend(rest)
        return {b: ns for b, ns in blocks.items() if ns}


class GradientEM(Algorithm):
    """E-step, then one gradient-ascent step on ``Q`` per block (experts, gate)."""

    name = "gradient-em"
    summary = (
        "E-step then one gradient step on Q for the experts and one for the gate "
        "(Fruytier et al. 2025, Algorithm 2)"
    )

    class Params(Params):
        """Parameters of gradient EM."""

        expert_lr: float = Field(
            0.5, gt=0, description="step size of the expert block on Q/n (curvature about "
            "pi_i / sigma^2 per expert for linear experts: 0.5 suits sigma ~ 1)"
        )
        gate_lr: float = Field(
            1.0, gt=0, description="step size of the gate block on Q/n (curvature at most 1/4 "
            "for standardised inputs)"
        )
        step_rule: Literal["fixed", "backtracking"] = Field(
            "backtracking", description="backtracking (default): halve each block's step from "
            "its lr until the Armijo condition on Q holds (monotone NLL); fixed: take the given "
            "steps, as in Fruytier et al.'s Algorithm 2 (unstable if lr exceeds 2/curvature)"
        )
        tol: float = Field(
            0.0, ge=0, description="stop when the relative decrease of the training NLL falls "
            "below tol (0 disables)"
        )

    def unsupported_reason(self, model: Model) -> str | None:
        """``None`` for families implementing :class:`SupportsEM`."""
        if isinstance(model, SupportsEM):
            return None
        return f"{self.name} needs a model family with an EM objective; {model.name!r} has none"

    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Alternate E-steps and gradient steps on ``Q`` from ``init``.

        Parameters
        ----------
        problem
            Model family (a :class:`SupportsEM`), training data and generator (unused).
        init
            Starting parameters.
        callback
            Receives the training NLL as objective; ``extras`` holds the accepted step size of each
            block (``expert_step``, ``gate_step``; 0 when backtracking found no increase) and the
            increase of ``Q/n`` over the iteration (``q_increase``).

        Returns
        -------
        ParamDict
            The last parameters (detached).
        """
        model = problem.model
        reason = self.unsupported_reason(model)
        if reason:
            raise UnsupportedProblem(reason)
        X, y = problem.X, problem.y
        par = _FreeParams(model, init)
        lrs = {"experts": self.params.expert_lr, "gate": self.params.gate_lr}
        free = {k: v.clone() for k, v in par.free.items()}

        def current() -> ParamDict:
            with torch.no_grad():
                return {k: v.detach().clone() for k, v in par.build(free).items()}

        params = current()
        with torch.no_grad():
            nll = float(model.nll(params, X, y))
        if not callback(Iterate(0, params, objective=nll)):
            return params
        t = 0
        while True:
            t += 1
            with torch.no_grad():
                # The family's Q oracle (E-step statistics, Q and its gradient in closed form)
                # where it has one, else the posterior and Q by autograd.
                oracle = getattr(model, "q_oracle", None)
                R = oracle(params, X, y) if oracle is not None else None
                if R is None:
                    R = model.posterior(params, X, y)
            q_start = None
            extras: dict[str, float] = {}
            if self.params.step_rule == "fixed":
                q_start, grads = self._q_and_grad(model, par, free, X, y, R)
                with torch.no_grad():
                    for block, names in par.blocks.items():
                        lr = lrs.get(block, self.params.expert_lr)
                        for n in names:
                            free[n] = free[n] + lr * grads[n]
                        extras[f"{_short(block)}_step"] = lr
                q_end = float(self._q(model, par, free, X, y, R))
            else:
                q = None
                for block, names in par.blocks.items():
                    q, grads = self._q_and_grad(model, par, free, X, y, R)
                    if q_start is None:
                        q_start = q
                    step, q = self._backtrack(
                        model, par, free, names, grads, q, lrs.get(block, self.params.expert_lr),
                        X, y, R,
                    )
                    extras[f"{_short(block)}_step"] = step
                q_end = q
            extras["q_increase"] = float(q_end - q_start)
            params = current()
            with torch.no_grad():
                new_nll = float(model.nll(params, X, y))
            if not callback(Iterate(t, params, objective=new_nll, extras=extras)):
                return params
            if not math.isfinite(new_nll):
                return params
            if self.params.tol > 0 and relative_decrease(nll, new_nll) < self.params.tol:
                return params
            nll = new_nll

    @staticmethod
    def _q(
        model: SupportsEM,
        par: _FreeParams,
        free: dict[str, torch.Tensor],
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor | Callable[..., tuple],
    ) -> torch.Tensor:
        """``Q/n`` at ``free`` (no gradient); ``R``: the posterior or the family's Q oracle."""
        with torch.no_grad():
            if not isinstance(R, torch.Tensor):
                return torch.tensor(R(par.build(free), grad=False)[0], dtype=torch.float64)
            return model.q_value(par.build(free), X, y, R)

    @staticmethod
    def _q_and_grad(
        model: SupportsEM,
        par: _FreeParams,
        free: dict[str, torch.Tensor],
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor | Callable[..., tuple],
    ) -> tuple[float, dict[str, torch.Tensor]]:
        """``Q/n`` at ``free`` and its gradient with respect to every free tensor."""
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in free.items()}
        names = list(leaves)
        with torch.enable_grad():
            full = par.build(leaves)
            if isinstance(R, torch.Tensor):
                q = model.q_value(full, X, y, R)
                grads = torch.autograd.grad(q, [leaves[n] for n in names], allow_unused=True)
            else:  # the oracle's gradient in the full parameters, chained to the free ones
                with torch.no_grad():
                    value, gfull = R({k: v.detach() for k, v in full.items()}, grad=True)
                outs = [k for k, v in full.items() if v.requires_grad and k in gfull]
                grads = torch.autograd.grad([full[k] for k in outs], [leaves[n] for n in names],
                                            grad_outputs=[gfull[k] for k in outs],
                                            allow_unused=True)
                q = torch.tensor(value, dtype=torch.float64)
        out = {
            n: (g if g is not None else torch.zeros_like(leaves[n])).detach()
            for n, g in zip(names, grads, strict=True)
        }
        return float(q.detach()), out

    def _backtrack(
        self,
        model: SupportsEM,
        par: _FreeParams,
        free: dict[str, torch.Tensor],
        names: list[str],
        grads: dict[str, torch.Tensor],
        q0: float,
        lr: float,
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor | Callable[..., tuple],
    ) -> tuple[float, float]:
        """Armijo backtracking on ``Q`` along the block's gradient; updates ``free`` in place."""
        sq = sum(float(grads[n].square().sum()) for n in names)
        if not sq > 0:
            return 0.0, q0
        step = lr
        for _ in range(_MAX_HALVINGS):
            cand = dict(free)
            for n in names:
                cand[n] = free[n] + step * grads[n]
            q = float(self._q(model, par, cand, X, y, R))
            if q >= q0 + _ARMIJO * step * sq:
                free.update({n: cand[n] for n in names})
                return step, q
            step *= 0.5
        return 0.0, q0


def _short(block: str) -> str:
    """``experts`` -> ``expert``: the prefix of a block's extras."""
    return block[:-1] if block.endswith("s") else block


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`GradientEM`."""
    register(GradientEM)
