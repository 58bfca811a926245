"""Mixture of MLP classifiers with an MLP gate (Fruytier et al. 2025, CIFAR-10 experiment).

Expert ``i`` maps ``x`` to class logits ``V_i relu(U_i x + b_i) + c_i``; the gate maps ``x`` to
expert logits ``V_g relu(U_g x + b_g) + c_g``; both have one hidden layer of width ``hidden``.
All experts are evaluated together (batched matrix products, no loop over experts or samples).

The M-step has no closed form: :meth:`DeepMoE.m_step` takes ``inner_steps`` Adam (or SGD) steps
on the M-step objective with the responsibilities fixed and keeps the best iterate, never worse
than the start. This is a *generalised* EM: each iteration increases ``Q(theta | theta_t)`` (or
leaves ``theta`` unchanged), which is enough for the training NLL never to increase, but it does
not maximise ``Q``. Mirror steps (``eta < 1``) use the soft targets of
:func:`~moebench_plugins.models.classification.mirror_targets`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from moebench import InitSpec, ParamDict, Params, hookimpl
from moebench.em import GateOptions
from moebench.errors import UnsupportedProblem

from .alignment import permuted_error
from .classification import (
    CategoricalExpertsMoE,
    _has_layout,
)
from .regression import InitError

__all__ = ["DeepMoE"]

_EXPERT = ("U", "b", "V", "c")
_GATE = ("Ug", "bg", "Vg", "cg")
#: Weight matrices and their fan-in axis sizes, for initialisation.
_WEIGHTS = ("U", "V", "Ug", "Vg")


class DeepMoE(CategoricalExpertsMoE):
    """Mixture of ``k`` one-hidden-layer ReLU MLP classifiers with a one-hidden-layer MLP gate.

    Parameters (``h = hidden``, ``C`` classes)::

        experts: U (k, h, d), b (k, h), V (k, C, h), c (k, C)
        gate:    Ug (h, d),   bg (h,),   Vg (k, h),   cg (k,)

    The gate's output layer is not re-referenced (softmax over experts is invariant to a common
    shift of the rows of ``Vg`` and entries of ``cg``; gradient methods update all of them).
    """

    name = "deep-moe"
    summary = "k one-hidden-layer ReLU MLP classifiers with an MLP gate (Fruytier et al. 2025)"

    class Params(Params):
        """Hyper-parameters of the deep MoE family."""

        k: int = Field(5, ge=1, description="number of experts")
        hidden: int = Field(100, ge=1, description="hidden width of every expert and the gate")
        inner_steps: int = Field(
            5, ge=1, description="optimiser steps on the M-step objective per EM iteration"
        )
        inner_lr: float = Field(1e-3, gt=0, description="learning rate of the inner optimiser")
        inner_optimizer: Literal["adam", "sgd"] = Field(
            "adam", description="inner optimiser of the M-step (fresh state every M-step)"
        )

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the expert and gate tensors."""
        k, h, d, C = self.n_experts, self.params.hidden, self.n_features, self.n_classes
        return {
            "U": (k, h, d), "b": (k, h), "V": (k, C, h), "c": (k, C),
            "Ug": (h, d), "bg": (h,), "Vg": (k, h), "cg": (k,),
        }

    # ------------------------------------------------------------------ initialisation

    def init_params(
        self, spec: InitSpec, generator: torch.Generator, truth: ParamDict | None = None
    ) -> ParamDict:
        """Initial parameters drawn with ``generator``; biases start at zero.

        Parameters
        ----------
        spec
            ``random``: Gaussian weights with std ``scale / sqrt(fan_in)``; ``unit-rows``: every
            row of every weight matrix (``U_i``, ``V_i``, ``Ug``, ``Vg``) Gaussian rescaled to norm
            ``scale`` (Fruytier et al.); ``near-truth``: the truth plus a random perturbation of
            Frobenius norm ``radius`` on every tensor.
        generator
            Source of randomness.
        truth
            Ground truth in this model's layout (needed by ``near-truth``).

        Returns
        -------
        ParamDict
            The eight tensors of :meth:`shapes`.

        Raises
        ------
        InitError
            ``near-truth`` without ground truth in this layout.
        """
        shapes = self.shapes()
        if spec.scheme == "near-truth":
            if truth is None or any(
                name not in truth or tuple(truth[name].shape) != shape
                for name, shape in shapes.items()
            ):
                raise InitError(
                    "init scheme 'near-truth' needs ground truth in deep-moe's layout "
                    f"({shapes}); use scheme 'random' or 'unit-rows'"
                )
            out = {}
            for name, shape in shapes.items():
                noise = self.randn(shape, generator)
                noise = noise * (spec.radius / noise.norm().clamp_min(1e-300))
                out[name] = truth[name].to(self.device, self.dtype) + noise
            return out
        out = {}
        for name, shape in shapes.items():
            if name not in _WEIGHTS:
                out[name] = torch.zeros(shape, dtype=self.dtype, device=self.device)
                continue
            w = self.randn(shape, generator)
            if spec.scheme == "random":
                out[name] = w * (spec.scale / math.sqrt(shape[-1]))
            elif spec.scheme == "unit-rows":
                out[name] = w * (spec.scale / w.norm(dim=-1, keepdim=True).clamp_min(1e-300))
            else:  # pragma: no cover - InitSpec validates the scheme
                raise InitError(f"unknown init scheme {spec.scheme!r}")
        return out

    # ------------------------------------------------------------------ densities

    def gate_log_probs(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``log p(z = i | x_n)``, shape ``(n, k)``."""
        H = torch.relu(X @ params["Ug"].T + params["bg"])
        return torch.log_softmax(H @ params["Vg"].T + params["cg"], dim=1)

    def expert_log_probs(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``log p(y = c | x_n, z = i)``, shape ``(n, k, C)``."""
        H = torch.relu(torch.einsum("nd,khd->nkh", X, params["U"]) + params["b"])
        logits = torch.einsum("nkh,kch->nkc", H, params["V"]) + params["c"]
        return torch.log_softmax(logits, dim=2)

    # ------------------------------------------------------------------ parameter error

    def parameter_error(self, params: ParamDict, truth: ParamDict) -> float:
        """Frobenius distance to ``truth``, minimised over permutations of the experts.

        Each expert's block ``(U_i, b_i, V_i - 1 v_{i,C}^T, c_i - c_{i,C})`` (output layer
        re-referenced to its last class) is compared with the truth's after permutation, plus the
        gate output layer ``(Vg, cg)`` permuted the same way and re-referenced to the expert that
        comes last, plus the gate hidden layer ``(Ug, bg)`` compared directly. Permutations of the
        hidden units are *not* factored out, so this is only meaningful near the truth.

        Truth in another family's layout (e.g. the ``logistic-moe`` truth of
        ``synthetic-logistic-moe``) gives NaN.

        Parameters
        ----------
        params, truth
            Parameters in this model's layout.

        Returns
        -------
        float
            The error, or NaN when ``truth`` is not in this model's layout.
        """
        if not _has_layout(truth, self.shapes()):
            return math.nan
        if not _has_layout(params, self.shapes()):
            raise ValueError(f"params must have the tensors {self.shapes()}")
        p = {n: v.detach().to("cpu", torch.float64) for n, v in params.items()}
        t = {n: v.detach().to("cpu", torch.float64) for n, v in truth.items()}

        def experts(q: dict[str, torch.Tensor]) -> torch.Tensor:
            V = q["V"] - q["V"][:, -1:, :]
            c = q["c"] - q["c"][:, -1:]
            return torch.cat([q["U"].flatten(1), q["b"], V.flatten(1), c], dim=1)

        gate = torch.cat([p["Vg"], p["cg"][:, None]], dim=1)
        gate_t = torch.cat([t["Vg"], t["cg"][:, None]], dim=1)
        err = permuted_error(experts(p), experts(t), gate, gate_t - gate_t[-1:])
        hidden = torch.cat([p["Ug"] - t["Ug"], (p["bg"] - t["bg"])[:, None]], dim=1)
        return err + float(hidden.norm())

    # ------------------------------------------------------------------ GD and EM

    def trainable(self, params: ParamDict) -> list[str]:
        """Every tensor."""
        return list(self.shapes())

    def param_groups(self) -> dict[str, list[str]]:
        """Experts: ``U, b, V, c``; gate: ``Ug, bg, Vg, cg``."""
        return {"experts": list(_EXPERT), "gate": list(_GATE)}

    def m_step(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor,
        params: ParamDict,
        gate: GateOptions,
        eta: float = 1.0,
    ) -> tuple[ParamDict, dict[str, float]]:
        """A generalised M-step: ``inner_steps`` full-batch optimiser steps on the M-step objective.

        Experts and gate are updated together (the objective is separable in the two blocks);
        the iterate with the largest objective among the start and the ``inner_steps`` steps is
        returned, so the objective never decreases. ``gate`` is ignored (the MLP gate has no
        Newton M-step; a ``gate_radius`` is refused).

        Parameters
        ----------
        X, y
            Inputs ``(n, d)`` and labels ``(n,)``.
        R
            Responsibilities at ``params``, shape ``(n, k)``.
        params
            Current parameters ``theta_t``.
        gate
            Gate options of the EM algorithm (only ``radius`` is checked).
        eta
            Mirror step size in ``(0, 1]``; 1 is (generalised) EM.

        Returns
        -------
        params : ParamDict
            New parameters.
        extras : dict
            ``m_step_gain`` (increase of the objective), ``inner_best_step`` (0 if the start was
            kept).
        """
        if gate.radius is not None:
            raise UnsupportedProblem(f"{self.name} has an MLP gate: gate_radius is not supported")
        G, T = self.m_step_targets(X, y, R, params, eta)
        p = self.params
        with torch.enable_grad():
            leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
            if p.inner_optimizer == "adam":
                opt: torch.optim.Optimizer = torch.optim.Adam(leaves.values(), lr=p.inner_lr)
            else:
                opt = torch.optim.SGD(leaves.values(), lr=p.inner_lr)
            best_value, best_step = -math.inf, 0
            best = {k: v.detach().clone() for k, v in params.items()}
            start_value = math.nan
            for step in range(p.inner_steps + 1):
                value = self.m_step_objective(leaves, X, G, T)
                v = float(value.detach())
                if step == 0:
                    start_value = v
                if v > best_value or step == 0:
                    best_value, best_step = v, step
                    if step > 0:
                        best = {k: t.detach().clone() for k, t in leaves.items()}
                if step == p.inner_steps or not math.isfinite(v):
                    break
                opt.zero_grad(set_to_none=True)
                (-value).backward()
                opt.step()
        return best, {"m_step_gain": best_value - start_value, "inner_best_step": float(best_step)}


@hookimpl
def register_models(register: Callable[[type], None]) -> None:
    """Register :class:`DeepMoE`."""
    register(DeepMoE)
