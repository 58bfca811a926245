"""Mixture of multinomial-logistic experts with a softmax gate (Jordan & Jacobs 1994).

.. math::

    p(z = i \\mid x) = \\mathrm{softmax}(W x)_i, \\qquad
    p(y = c \\mid x, z = i) = \\mathrm{softmax}(B_i x)_c,

with ``W`` of shape ``(k, d')`` (last row fixed at zero) and each ``B_i`` of shape ``(C, d')``.
Fruytier et al. (2025) fit this family, with ``k = 2`` and ``C = 10``, to an altered Fashion-MNIST.

The EM M-step splits into one soft-label softmax regression for the gate and one weighted
multinomial logistic regression per expert. Both are solved by damped Newton when the Hessian
is small; the experts fall back to safeguarded L-BFGS when it is not (``(C-1) d'`` large).

Mirror steps (Fruytier et al.)
-------------------------------
With step size ``0 < eta <= 1`` the M-step maximises

.. math::

    F_\\eta(\\theta) = \\eta\\, Q(\\theta \\mid \\theta_t)
        + (1 - \\eta)\\, \\frac{1}{n} \\sum_n
          \\mathbb{E}_{(y, z) \\sim p(\\cdot \\mid x_n; \\theta_t)}
          \\log p(y, z \\mid x_n; \\theta),

i.e. ``eta Q - (1 - eta) KL(p_{theta_t} || p_theta)`` up to a constant: the mirror-descent step
in the KL geometry of the complete-data model. Since
``log p(y, z=i | x) = log softmax(Wx)_i + log softmax(B_i x)_y`` is separable, ``F_eta`` is the EM
objective with the responsibilities replaced by soft targets (see :func:`mirror_targets`):

* gate: soft labels ``G_ni = eta R_ni + (1 - eta) P_ni`` with ``P = softmax(W_t x)``;
* expert ``i``: soft targets over classes
  ``T_nic = eta R_ni 1[y_n = c] + (1 - eta) P_ni softmax(B_{i,t} x_n)_c``.

At ``eta = 1`` these are exactly ``R`` and ``R_ni 1[y_n = c]`` (EM). Any ``theta`` with
``F_eta(theta) >= F_eta(theta_t)`` satisfies
``eta (Q(theta) - Q(theta_t)) >= (1 - eta) KL(p_{theta_t} || p_theta) >= 0``, so mirror steps keep
the training NLL non-increasing, like EM.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable

import torch
from pydantic import Field

from moebench import InitSpec, ParamDict, Params, hookimpl
from moebench.em import GateOptions, SupportsEM

from .alignment import permuted_error
from .caching import data_cache
from .gate import fit_softmax_gate
from .regression import InitError

__all__ = [
    "LogisticMoE",
    "as_labels",
    "complete_data_kl_from_log_probs",
    "mirror_targets",
    "soft_target_objective",
]

#: The :class:`~moebench_plugins.models.caching.DataCache` entry of an input tensor ``X``
#: holding ``((X._version, F._version), F)`` with ``F = [X, 1]``.
WITH_INTERCEPT = "with_intercept"


# ---------------------------------------------------------------------------------- helpers


def with_intercept(X: torch.Tensor) -> torch.Tensor:
    """``X`` with a column of ones appended, built once per input tensor while it lives.

    Every EM iteration and every metric evaluation needs these features of the same training and
    test inputs; at Fashion-MNIST's 10,000 x 785 the copy costs 15 ms, a third of a metric
    evaluation when rebuilt each time. The copy is rebuilt when ``X`` or the copy was modified
    in place and dropped when ``X`` is garbage-collected; inputs that require gradients are not
    cached.
    """
    if X.requires_grad:
        return torch.cat([X, X.new_ones(X.shape[0], 1)], dim=1)
    cache = data_cache(X)
    hit = cache.get(WITH_INTERCEPT)
    if hit is not None and hit[0] == (X._version, hit[1]._version):
        return hit[1]
    F = torch.cat([X, X.new_ones(X.shape[0], 1)], dim=1)
    cache[WITH_INTERCEPT] = ((X._version, F._version), F)
    return F


def as_labels(y: torch.Tensor) -> torch.Tensor:
    """Integer class labels from a label tensor (the runner may pass them as floats).

    Parameters
    ----------
    y
        Labels ``0 .. C-1``, shape ``(n,)``, integer or floating dtype.

    Returns
    -------
    torch.Tensor
        ``int64`` labels, shape ``(n,)``.
    """
    if y.is_floating_point():
        return torch.round(y).long()
    return y.long()


def mirror_targets(
    R: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    eta: float,
    gate_probs: torch.Tensor | None = None,
    expert_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets of the (mirror) M-step for a mixture of classifiers.

    Parameters
    ----------
    R
        Responsibilities at ``theta_t``, shape ``(n, k)``.
    y
        Labels, shape ``(n,)``.
    n_classes
        Number of classes ``C``.
    eta
        Step size in ``(0, 1]``; ``1`` is EM.
    gate_probs
        ``P_ni = p(z = i | x_n; theta_t)``, shape ``(n, k)`` (needed when ``eta < 1``).
    expert_probs
        ``p(y = c | x_n, z = i; theta_t)``, shape ``(n, k, C)`` (needed when ``eta < 1``).

    Returns
    -------
    G : torch.Tensor
        Gate soft labels ``eta R + (1 - eta) P``, shape ``(n, k)``.
    T : torch.Tensor
        Expert soft targets ``eta R_ni 1[y_n = c] + (1 - eta) P_ni q_nic``, shape ``(n, k, C)``.
    """
    onehot = torch.nn.functional.one_hot(as_labels(y), n_classes).to(R.dtype)
    T = R[:, :, None] * onehot[:, None, :]
    if eta == 1.0:
        return R, T
    if not 0.0 < eta < 1.0:
        raise ValueError(f"eta must lie in (0, 1], got {eta}")
    if gate_probs is None or expert_probs is None:
        raise ValueError("mirror steps (eta < 1) need gate_probs and expert_probs at theta_t")
    G = eta * R + (1.0 - eta) * gate_probs
    T = eta * T + (1.0 - eta) * gate_probs[:, :, None] * expert_probs
    return G, T


def soft_target_objective(
    gate_log_probs: torch.Tensor,
    expert_log_probs: torch.Tensor,
    G: torch.Tensor,
    T: torch.Tensor,
) -> torch.Tensor:
    """The M-step objective ``(1/n) sum_n [sum_i G_ni log g_ni + sum_ic T_nic log e_nic]``.

    With the targets of :func:`mirror_targets` at ``eta = 1`` this is ``Q(theta | theta_t) / n``
    (:meth:`SupportsEM.q_value`); ``0 * log 0`` counts as 0.

    Parameters
    ----------
    gate_log_probs
        ``log p(z = i | x_n)``, shape ``(n, k)``.
    expert_log_probs
        ``log p(y = c | x_n, z = i)``, shape ``(n, k, C)``.
    G, T
        Soft targets, shapes ``(n, k)`` and ``(n, k, C)``.

    Returns
    -------
    torch.Tensor
        A 0-d tensor.
    """
    n = gate_log_probs.shape[0]
    g = torch.where(G > 0, G * gate_log_probs, torch.zeros_like(gate_log_probs)).sum()
    e = torch.where(T > 0, T * expert_log_probs, torch.zeros_like(expert_log_probs)).sum()
    return (g + e) / n


def complete_data_kl_from_log_probs(
    gate_old: torch.Tensor,
    gate_new: torch.Tensor,
    expert_old: torch.Tensor,
    expert_new: torch.Tensor,
) -> torch.Tensor:
    """Per-sample ``KL(p(y, z | x_n; old) || p(y, z | x_n; new))`` of a mixture of classifiers.

    ``sum_i g_i^old [log g_i^old - log g_i^new + sum_c e_ic^old (log e_ic^old - log e_ic^new)]``.

    Parameters
    ----------
    gate_old, gate_new
        Gate log-probabilities, shape ``(n, k)``.
    expert_old, expert_new
        Expert log-probabilities over classes, shape ``(n, k, C)``.

    Returns
    -------
    torch.Tensor
        Shape ``(n,)``, non-negative up to rounding.
    """
    def weighted(log_w: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        w = torch.exp(log_w)
        return torch.where(w > 0, w * value, torch.zeros_like(value))  # 0 * log 0 = 0

    expert_kl = weighted(expert_old, expert_old - expert_new).sum(dim=2)
    return weighted(gate_old, gate_old - gate_new + expert_kl).sum(dim=1)


def _weighted_ce(F: torch.Tensor, T: torch.Tensor, B: torch.Tensor) -> float:
    """Unpenalised ``(1/n) sum_nc T_nc log softmax(B f_n)_c`` of one expert."""
    logp = torch.log_softmax(F @ B.T, dim=1)
    return float(torch.where(T > 0, T * logp, torch.zeros_like(logp)).sum() / F.shape[0])


def _has_layout(tensors: ParamDict, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether ``tensors`` has every named tensor of ``shapes`` with that shape."""
    return all(n in tensors and tuple(tensors[n].shape) == s for n, s in shapes.items())


def _rows_to_norm(M: torch.Tensor, norm: float) -> torch.Tensor:
    return M * (norm / M.norm(dim=-1, keepdim=True).clamp_min(1e-300))


def _to_frobenius(M: torch.Tensor, norm: float) -> torch.Tensor:
    return M * (norm / M.norm().clamp_min(1e-300))


def _fit_expert_newton(
    F: torch.Tensor, T: torch.Tensor, B0: torch.Tensor, ridge: float, max_steps: int
) -> tuple[torch.Tensor, int]:
    """Weighted multinomial logistic regression by damped Newton with Armijo backtracking.

    The problem is a soft-label softmax regression with sample weights ``sum_c T_nc``, which
    :func:`~moebench_plugins.models.gate.fit_softmax_gate` solves (last class row fixed at 0).
    """
    W, info = fit_softmax_gate(F, T, B0 - B0[-1:], ridge=ridge, max_steps=max_steps)
    return W, int(info["steps"])


def _fit_expert_lbfgs(
    F: torch.Tensor, T: torch.Tensor, B0: torch.Tensor, ridge: float, max_iter: int
) -> tuple[torch.Tensor, int]:
    """The same problem as :func:`_fit_expert_newton` by L-BFGS with a strong-Wolfe line search.

    Minimises ``-(1/n) sum_nc T_nc log softmax(B f_n)_c + ridge/2 ||B||^2`` over the first
    ``C - 1`` rows of ``B`` (the last fixed at zero) with an analytic gradient; memory is
    ``O(n C + C d)``, no Hessian is formed.
    """
    n, d = F.shape
    s = T.sum(dim=1, keepdim=True)
    zero = F.new_zeros(1, d)
    V = (B0[:-1] - B0[-1:]).detach().clone()
    opt = torch.optim.LBFGS(
        [V], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
        tolerance_grad=1e-12, tolerance_change=1e-14,
    )

    def closure() -> torch.Tensor:
        logp = torch.log_softmax(F @ torch.cat([V, zero]).T, dim=1)
        ll = torch.where(T > 0, T * logp, torch.zeros_like(logp)).sum() / n
        loss = -ll + 0.5 * ridge * (V * V).sum()
        # d/dV of -ll: -(T - s p)^T F / n on the free rows.
        grad = -((T - s * torch.exp(logp))[:, :-1].T @ F) / n + ridge * V
        V.grad = grad
        return loss

    opt.step(closure)
    steps = int(opt.state[V].get("n_iter", 0)) if V in opt.state else 0
    return torch.cat([V.detach(), zero]), steps


def _gate_m_step(
    F: torch.Tensor, G: torch.Tensor, W_old: torch.Tensor, gate: GateOptions
) -> tuple[torch.Tensor, dict[str, float]]:
    """Soft-label softmax regression of the gate, refused if it lowers the unpenalised objective.

    Shared by the linear-gated families of this module.
    """
    W, info = fit_softmax_gate(F, G, W_old, ridge=gate.ridge, max_steps=gate.max_steps,
                               radius=gate.radius)
    old_q = _weighted_ce(F, G, W_old)
    new_q = _weighted_ce(F, G, W)
    rejected = not (new_q >= old_q)
    return (W_old.clone() if rejected else W), {
        "gate_newton_steps": float(info["steps"]),
        "gate_rejected": float(rejected),
    }


# ---------------------------------------------------------------------------------- the model


class CategoricalExpertsMoE(SupportsEM):
    """An MoE whose experts output class probabilities (logistic or MLP experts).

    Subclasses give :meth:`gate_log_probs` ``(n, k)`` and :meth:`expert_log_probs`
    ``(n, k, C)``; the joint, the prediction and the complete-data KL follow from them.
    """

    task = "classification"

    @abstractmethod
    def gate_log_probs(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``log p(z = i | x_n)``, shape ``(n, k)``."""

    @abstractmethod
    def expert_log_probs(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``log p(y = c | x_n, z = i)``, shape ``(n, k, C)``."""

    def joint_log_probs(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(y_n, z_n = i | x_n)``, shape ``(n, k)``."""
        lp = self.expert_log_probs(params, X)
        idx = as_labels(y)[:, None, None].expand(-1, lp.shape[1], 1)
        return self.gate_log_probs(params, X) + lp.gather(2, idx)[:, :, 0]

    def predict(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``sum_i p(z = i | x) p(y = c | x, z = i)``, shape ``(n, C)``."""
        lp = self.gate_log_probs(params, X)[:, :, None] + self.expert_log_probs(params, X)
        return torch.exp(torch.logsumexp(lp, dim=1))

    def complete_data_kl(
        self, params_old: ParamDict, params_new: ParamDict, X: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample ``KL(p(y, z | x_n; old) || p(y, z | x_n; new))``, shape ``(n,)``.

        See :func:`complete_data_kl_from_log_probs`. With it, ``mirror-em``'s ``md_objective``,
        ``-eta (Q_R(new) - Q_R(old)) + (1 - eta) KL``, equals ``-(F_eta(new) - F_eta(old))``
        exactly (``<= 0``), since ``F_eta(theta) = eta Q_R(theta) + (1 - eta) Q_self(theta)`` and
        ``Q_self(new) - Q_self(old) = -KL``.
        """
        return complete_data_kl_from_log_probs(
            self.gate_log_probs(params_old, X), self.gate_log_probs(params_new, X),
            self.expert_log_probs(params_old, X), self.expert_log_probs(params_new, X),
        )

    def m_step_targets(
        self, X: torch.Tensor, y: torch.Tensor, R: torch.Tensor, params: ParamDict, eta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft targets ``(G, T)`` of the (mirror) M-step at ``theta_t = params``.

        See :func:`mirror_targets`; with ``eta = 1`` they are ``R`` and ``R_ni 1[y_n = c]``.
        """
        if eta == 1.0:
            return mirror_targets(R, y, self.n_classes, 1.0)
        return mirror_targets(
            R, y, self.n_classes, eta,
            gate_probs=torch.exp(self.gate_log_probs(params, X)),
            expert_probs=torch.exp(self.expert_log_probs(params, X)),
        )

    def m_step_objective(
        self, params: ParamDict, X: torch.Tensor, G: torch.Tensor, T: torch.Tensor
    ) -> torch.Tensor:
        """``F_eta(theta)`` for the targets of :meth:`m_step_targets` (``Q / n`` at ``eta = 1``)."""
        return soft_target_objective(
            self.gate_log_probs(params, X), self.expert_log_probs(params, X), G, T
        )


class LogisticMoE(CategoricalExpertsMoE):
    """Mixture of ``k`` multinomial-logistic experts ``softmax(B_i x)`` with a softmax gate.

    Parameters are ``{"B": (k, C, d'), "W": (k, d')}`` with ``d' = d`` (plus one with an
    intercept); ``W[-1]`` is always zero. ``B_i`` keeps all ``C`` rows (an expert's
    probabilities are invariant to adding a common vector to its rows): gradient methods update
    all of them, EM's M-step returns ``B_i`` re-referenced to a zero last row.
    """

    name = "logistic-moe"
    summary = "k multinomial-logistic experts softmax(B_i x) with a softmax gate"

    class Params(Params):
        """Hyper-parameters of the logistic MoE family."""

        k: int = Field(2, ge=1, description="number of experts")
        intercept: bool = Field(
            False, description="append a constant-1 feature to the inputs of experts and gate"
        )
        expert_ridge: float = Field(
            1e-6, gt=0, description="ridge ridge/2 ||B_i||^2 in the expert M-step (keeps it "
            "finite for separable classes)"
        )
        newton_steps: int = Field(
            20, ge=1, description="maximum damped-Newton steps per expert M-step"
        )
        newton_max_dim: int = Field(
            2000, ge=1, description="use Newton for an expert when (C-1) d' <= this; L-BFGS "
            "otherwise (the Newton system has ((C-1) d')^2 entries)"
        )
        inner_steps: int = Field(
            20, ge=1, description="L-BFGS iterations per expert M-step when Newton is too large"
        )

    # ------------------------------------------------------------------ shapes and features

    @property
    def dim(self) -> int:
        """Number of columns ``d'`` of ``B_i`` and ``W`` (``d``, plus one with an intercept)."""
        return self.n_features + int(self.params.intercept)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of ``B`` and ``W``."""
        k, C, d = self.n_experts, self.n_classes, self.dim
        return {"B": (k, C, d), "W": (k, d)}

    def features(self, X: torch.Tensor) -> torch.Tensor:
        """``X`` with a column of ones appended if configured, shape ``(n, d')``."""
        return with_intercept(X) if self.params.intercept else X

    # ------------------------------------------------------------------ initialisation

    def init_params(
        self, spec: InitSpec, generator: torch.Generator, truth: ParamDict | None = None
    ) -> ParamDict:
        """Initial parameters drawn with ``generator``.

        Parameters
        ----------
        spec
            ``random``: Gaussian entries with std ``scale / sqrt(d')``; ``unit-rows``: every row
            of every linear layer (each ``B_i`` and ``W``) Gaussian, rescaled to norm ``scale``;
            ``near-truth``: the truth plus random perturbations of Frobenius norm ``radius`` on
            ``B`` and on the free gate rows ``W[:-1]`` (gate re-referenced to its last row).
        generator
            Source of randomness.
        truth
            Ground truth (needed by ``near-truth``).

        Returns
        -------
        ParamDict
            ``B`` and ``W`` (last row zero).

        Raises
        ------
        InitError
            ``near-truth`` without ground truth, or with truth of the wrong shape.
        """
        k, C, d = self.n_experts, self.n_classes, self.dim
        if spec.scheme == "random":
            B = self.randn((k, C, d), generator) * (spec.scale / math.sqrt(d))
            W = self.randn((k, d), generator) * (spec.scale / math.sqrt(d))
        elif spec.scheme == "unit-rows":
            B = _rows_to_norm(self.randn((k, C, d), generator), spec.scale)
            W = _rows_to_norm(self.randn((k, d), generator), spec.scale)
        elif spec.scheme == "near-truth":
            if truth is None:
                raise InitError(
                    "init scheme 'near-truth' needs ground-truth parameters, but this dataset "
                    "has none; use scheme 'random' or 'unit-rows'"
                )
            for name, shape in self.shapes().items():
                if name not in truth or tuple(truth[name].shape) != shape:
                    got = tuple(truth[name].shape) if name in truth else "missing"
                    raise InitError(f"truth[{name!r}] has shape {got}, expected {shape}")
            B_t = truth["B"].to(self.device, self.dtype)
            W_t = truth["W"].to(self.device, self.dtype)
            B = B_t + _to_frobenius(self.randn((k, C, d), generator), spec.radius)
            W = W_t - W_t[-1:]
            if k > 1:
                W[:-1] += _to_frobenius(self.randn((k - 1, d), generator), spec.radius)
        else:  # pragma: no cover - InitSpec validates the scheme
            raise InitError(f"unknown init scheme {spec.scheme!r}")
        W = W.clone()
        W[-1] = 0
        return {"B": B, "W": W}

    # ------------------------------------------------------------------ densities

    def gate_log_probs(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``log softmax(W x_n)_i``, shape ``(n, k)``."""
        return torch.log_softmax(self.features(X) @ params["W"].T, dim=1)

    def expert_log_probs(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``log p(y = c | x_n, z = i) = log softmax(B_i x_n)_c``, shape ``(n, k, C)``."""
        F, B = self.features(X), params["B"]
        k, C, d = B.shape
        # (B F^T)^T rather than F B^T: MKL runs the GEMM with the long dimension as columns
        # about 3x faster (10,000 x 786 inputs, k C = 20 outputs).
        logits = (B.reshape(k * C, d) @ F.T).T.contiguous().reshape(F.shape[0], k, C)
        return torch.log_softmax(logits, dim=2)

    # ------------------------------------------------------------------ parameter error

    def parameter_error(self, params: ParamDict, truth: ParamDict) -> float:
        """Distance to the truth, minimised over permutations of the experts.

        .. math::

            E = \\min_\\pi \\lVert \\tilde B_\\pi - \\tilde B^* \\rVert_F
                + \\lVert (W_\\pi - \\mathbf{1} w_{\\pi(k)}^\\top)
                          - (W^* - \\mathbf{1} w_{k}^{*\\top}) \\rVert_F

        where ``B~_i = B_i - 1 b_{i,C}^T`` is expert ``i`` re-referenced to its last class row
        (its probabilities are invariant to a common shift of its rows) and the gates are
        re-referenced to the expert that comes last after the permutation. The search is
        exhaustive for ``k <= 7``; beyond, the permutation is the optimal assignment of the
        re-referenced experts (Hungarian algorithm on squared distances).

        Parameters
        ----------
        params
            Estimated parameters.
        truth
            True parameters (same layout).

        Returns
        -------
        float
            The error, or NaN when ``truth`` is not in this model's layout (truth of another
            family, or another ``k`` or ``C``).
        """
        if not _has_layout(truth, self.shapes()):
            return math.nan
        if not _has_layout(params, self.shapes()):
            raise ValueError(f"params must have the tensors {self.shapes()}")
        B = params["B"].detach().to("cpu", torch.float64)
        W = params["W"].detach().to("cpu", torch.float64)
        B_t = truth["B"].detach().to("cpu", torch.float64)
        W_t = truth["W"].detach().to("cpu", torch.float64)
        B = (B - B[:, -1:, :]).flatten(1)
        B_t = (B_t - B_t[:, -1:, :]).flatten(1)
        W_t = W_t - W_t[-1:]
        return permuted_error(B, B_t, W, W_t)

    # ------------------------------------------------------------------ GD helpers

    def trainable(self, params: ParamDict) -> list[str]:
        """``B`` and ``W`` (``W[-1] = 0`` is kept by :meth:`free_params` / :meth:`from_free`)."""
        return ["B", "W"]

    def free_params(self, params: ParamDict) -> dict[str, torch.Tensor]:
        """The unconstrained trainable tensors: all of ``B`` and the free gate rows ``W[:-1]``.

        Parameters
        ----------
        params
            Parameters in the model's layout.

        Returns
        -------
        dict
            Detached copies, by name.
        """
        return {"B": params["B"].detach().clone(), "W_free": params["W"][:-1].detach().clone()}

    def from_free(self, free: dict[str, torch.Tensor], params: ParamDict) -> ParamDict:
        """Rebuild the full parameters from :meth:`free_params` (differentiably)."""
        Wf = free["W_free"]
        return {"B": free["B"], "W": torch.cat([Wf, Wf.new_zeros(1, Wf.shape[1])], dim=0)}

    # ------------------------------------------------------------------ EM

    def param_groups(self) -> dict[str, list[str]]:
        """Experts: ``B``; gate: ``W``."""
        return {"experts": ["B"], "gate": ["W"]}

    def m_step(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor,
        params: ParamDict,
        gate: GateOptions,
        eta: float = 1.0,
    ) -> tuple[ParamDict, dict[str, float]]:
        """Experts by weighted multinomial logistic regression, gate by damped Newton.

        Each expert ``i`` maximises ``(1/n) sum_nc T_nic log softmax(B_i x_n)_c -
        expert_ridge/2 ||B_i||^2`` over its first ``C - 1`` rows (last row zero) from the current
        ``B_i``: by damped Newton with Armijo backtracking when ``(C-1) d' <= newton_max_dim``,
        otherwise by ``inner_steps`` L-BFGS iterations (strong Wolfe). A new ``B_i`` (and a new
        gate) is kept only if it does not lower the unpenalised objective, so no sub-step
        decreases ``F_eta`` and the training NLL never increases (see the module docstring for
        ``eta < 1``).

        Parameters
        ----------
        X, y
            Inputs ``(n, d)`` and labels ``(n,)``.
        R
            Responsibilities at ``params``, shape ``(n, k)``.
        params
            Current parameters ``theta_t``.
        gate
            Gate M-step options (ridge, radius, Newton steps).
        eta
            Mirror step size in ``(0, 1]``; 1 is EM.

        Returns
        -------
        params : ParamDict
            New parameters.
        extras : dict
            ``gate_newton_steps``, ``gate_rejected``, ``expert_steps`` (total inner steps),
            ``experts_rejected`` (experts that kept their parameters), ``expert_lbfgs``
            (1 when the L-BFGS path was used).
        """
        F = self.features(X)
        n = F.shape[0]
        G, T = self.m_step_targets(X, y, R, params, eta)
        p = self.params
        use_newton = (self.n_classes - 1) * self.dim <= p.newton_max_dim
        B_old = params["B"]
        B = B_old.clone()
        steps, rejected = 0, 0
        mass = T.sum(dim=(0, 2))
        for i in range(self.n_experts):
            Ti = T[:, i, :]
            if float(mass[i]) <= 1e-12 * n:
                continue  # an expert without responsibility keeps its parameters
            if use_newton:
                cand, s = _fit_expert_newton(F, Ti, B_old[i], p.expert_ridge, p.newton_steps)
            else:
                cand, s = _fit_expert_lbfgs(F, Ti, B_old[i], p.expert_ridge, p.inner_steps)
            steps += s
            if torch.isfinite(cand).all() and _weighted_ce(F, Ti, cand) >= _weighted_ce(
                F, Ti, B_old[i]
            ):
                B[i] = cand
            else:
                rejected += 1
        W, info = _gate_m_step(F, G, params["W"], gate)
        return {"B": B, "W": W}, {
            **info,
            "expert_steps": float(steps),
            "experts_rejected": float(rejected),
            "expert_lbfgs": float(not use_newton),
        }


@hookimpl
def register_models(register: Callable[[type], None]) -> None:
    """Register :class:`LogisticMoE`."""
    register(LogisticMoE)
