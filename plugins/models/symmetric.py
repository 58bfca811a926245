"""Symmetric mixtures of two experts: SymMoLinE and SymMoLogE (Fruytier, Mokhtari, Sanghavi 2025).

Both have a latent ``z in {+1, -1}`` with the logistic gate

.. math::

    P(z \\mid x) = \\sigma(z\\, w^\\top x)
                 = \\frac{e^{z w^\\top x / 2}}{e^{w^\\top x / 2} + e^{-w^\\top x / 2}},

(so the gate logit is ``w.x``, not ``w.x / 2``; NOTES.md section 1.3) and experts ``+beta`` and
``-beta``:

* **SymMoLinE**: ``y | x, z ~ N(z beta.x, sigma^2)`` with a known ``sigma`` (default 1). Then
  ``log p(y, z | x) = z (y beta.x / sigma^2 + w.x / 2) - A(x; theta) + const`` with
  ``A = (beta.x)^2 / (2 sigma^2) + log 2cosh(w.x / 2)``: an exponential family whose natural
  parameter is ``theta = (beta, w)`` itself, so EM is mirror descent *without* projection.
* **SymMoLogE**: ``y in {-1, +1}`` with ``P(y | x, z) = sigma(y z beta.x)``, so that
  ``log p(y, z | x) = y z beta.x / 2 + z w.x / 2 - log 2cosh(beta.x / 2) - log 2cosh(w.x / 2)``,
  again an exponential family in ``theta = (beta, w)``. Labels are read as ``+1`` where ``y > 0``
  and ``-1`` otherwise, so both the paper's coding ``{-1, +1}`` and moebench's class indices
  ``{0, 1}`` (class 0 is ``y = -1``, class 1 is ``y = +1``) work; the runner passes them as a
  float tensor.

Parameters are ``{"beta": (d,), "w": (d,)}``. In the expert layout of the EM protocol, ``z = +1``
is expert 0 and ``z = -1`` expert 1, and the gate is the two-row softmax ``[w, 0]``
(``softmax([w.x, 0]) = [sigma(w.x), sigma(-w.x)]``), so the gate M-step reuses
:func:`~moebench_plugins.models.gate.fit_softmax_gate`. The model is invariant under
``(beta, w) -> (-beta, -w)`` (relabelling ``z``); :meth:`parameter_error` takes the better sign.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from pydantic import Field

from moebench import InitSpec, ParamDict, Params, hookimpl
from moebench.em import GateOptions, SupportsEM

from .gate import DEFAULT_TOL, fit_softmax_gate, project_rows
from .regression import InitError

__all__ = ["SymMoLinE", "SymMoLogE"]

_LOG_2PI = math.log(2.0 * math.pi)


def _bernoulli_kl(logit_p: torch.Tensor, logit_q: torch.Tensor) -> torch.Tensor:
    """``KL(Bern(sigma(logit_p)) || Bern(sigma(logit_q)))`` elementwise, overflow-free."""
    p = torch.sigmoid(logit_p)
    return p * (nnf.logsigmoid(logit_p) - nnf.logsigmoid(logit_q)) + (1 - p) * (
        nnf.logsigmoid(-logit_p) - nnf.logsigmoid(-logit_q)
    )


def _logistic_step(
    X: torch.Tensor,
    labels: torch.Tensor,
    v0: torch.Tensor,
    gate: GateOptions,
    eta: float,
) -> tuple[torch.Tensor, float, bool]:
    """Soft-label logistic regression ``max sum_n [q log sigma(v.x) + (1-q) log sigma(-v.x)]``.

    ``labels`` is ``(n, 2)`` with columns ``[q, 1 - q]``. Solved by :func:`fit_softmax_gate` in the
    two-row layout ``[v, 0]`` with ridge ``eta * gate.ridge``, stopping threshold scaled by
    ``eta^2`` and the ball ``||v|| <= gate.radius`` when set; a result that lowers the
    unpenalised objective relative to the (projected) start is
    refused. Returns ``(v, newton_steps, rejected)``.
    """
    W0 = torch.stack([v0, torch.zeros_like(v0)])
    W, info = fit_softmax_gate(
        X, labels, W0, ridge=eta * gate.ridge, max_steps=gate.max_steps, radius=gate.radius,
        tol=DEFAULT_TOL * eta**2,
    )
    start = v0 if gate.radius is None else project_rows(v0[None, :], gate.radius)[0]

    def unpenalised(v: torch.Tensor) -> float:
        u = X @ v
        lp = torch.stack([nnf.logsigmoid(u), nnf.logsigmoid(-u)], dim=1)
        return float(torch.where(labels > 0, labels * lp, torch.zeros_like(lp)).sum())

    rejected = not (unpenalised(W[0]) >= unpenalised(start))
    return (start.clone() if rejected else W[0].clone()), float(info["steps"]), rejected


class _SymmetricMoE(SupportsEM):
    """What SymMoLinE and SymMoLogE share: shapes, gate, initialisation, errors, EM plumbing."""

    # ------------------------------------------------------------------ shapes

    @property
    def n_experts(self) -> int:
        """Two experts, ``z = +1`` (index 0) and ``z = -1`` (index 1)."""
        return 2

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``beta`` and ``w``, both of shape ``(d,)``."""
        d = self.n_features
        return {"beta": (d,), "w": (d,)}

    # ------------------------------------------------------------------ initialisation

    def init_params(
        self, spec: InitSpec, generator: torch.Generator, truth: ParamDict | None = None
    ) -> ParamDict:
        """Initial ``beta`` and ``w`` drawn with ``generator``.

        Parameters
        ----------
        spec
            ``random``: Gaussian entries with std ``scale / sqrt(d)``; ``unit-rows``: random
            directions of norm ``scale``; ``near-truth``: the truth plus a random perturbation of
            norm ``radius`` on each of ``beta`` and ``w``.
        generator
            Source of randomness.
        truth
            Ground truth (needed by ``near-truth``).

        Returns
        -------
        ParamDict
            ``{"beta": (d,), "w": (d,)}``.

        Raises
        ------
        InitError
            ``near-truth`` without ground truth or with truth of the wrong shape.
        """
        d = self.n_features
        if spec.scheme == "random":
            scale = spec.scale / math.sqrt(d)
            return {n: self.randn((d,), generator) * scale for n in ("beta", "w")}
        if spec.scheme == "unit-rows":
            return {n: _to_norm(self.randn((d,), generator), spec.scale) for n in ("beta", "w")}
        if spec.scheme == "near-truth":
            if truth is None:
                raise InitError(
                    "init scheme 'near-truth' needs ground-truth parameters, but this dataset "
                    "has none; use scheme 'random' or 'unit-rows'"
                )
            out = {}
            for n in ("beta", "w"):
                if n not in truth or tuple(truth[n].shape) != (d,):
                    got = tuple(truth[n].shape) if n in truth else "missing"
                    raise InitError(f"truth[{n!r}] has shape {got}, expected {(d,)}")
                base = truth[n].to(self.device, self.dtype)
                out[n] = base + _to_norm(self.randn((d,), generator), spec.radius)
            return out
        raise InitError(f"unknown init scheme {spec.scheme!r}")  # pragma: no cover

    # ------------------------------------------------------------------ densities

    def gate_log_probs(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``[log sigma(w.x), log sigma(-w.x)]``, shape ``(n, 2)``."""
        u = X @ params["w"]
        return torch.stack([nnf.logsigmoid(u), nnf.logsigmoid(-u)], dim=1)

    def expert_log_probs(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(y_n | x_n, z)`` for ``z = +1, -1``, shape ``(n, 2)``."""
        raise NotImplementedError

    def joint_log_probs(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(y_n, z | x_n)`` for ``z = +1`` (column 0) and ``z = -1`` (column 1)."""
        return self.gate_log_probs(params, X) + self.expert_log_probs(params, X, y)

    # ------------------------------------------------------------------ error and GD helpers

    def parameter_error(self, params: ParamDict, truth: ParamDict) -> float:
        """``min_s ||beta - s beta*|| + ||w - s w*||`` over the sign symmetry ``s = +-1``."""
        b = params["beta"].detach().to("cpu", torch.float64)
        w = params["w"].detach().to("cpu", torch.float64)
        bt = truth["beta"].detach().to("cpu", torch.float64)
        wt = truth["w"].detach().to("cpu", torch.float64)
        if b.shape != bt.shape or w.shape != wt.shape:
            raise ValueError(
                f"parameter shapes beta {tuple(b.shape)}, w {tuple(w.shape)} differ from the "
                f"truth's beta {tuple(bt.shape)}, w {tuple(wt.shape)}"
            )
        return min(
            float((b - s * bt).norm() + (w - s * wt).norm()) for s in (1.0, -1.0)
        )

    def trainable(self, params: ParamDict) -> list[str]:
        """Both ``beta`` and ``w`` (no constraints, no fixed parts)."""
        return ["beta", "w"]

    def free_params(self, params: ParamDict) -> dict[str, torch.Tensor]:
        """Detached copies of ``beta`` and ``w`` (the parameters are unconstrained)."""
        return {n: params[n].detach().clone() for n in ("beta", "w")}

    def from_free(self, free: dict[str, torch.Tensor], params: ParamDict) -> ParamDict:
        """The identity map (differentiable)."""
        return {"beta": free["beta"], "w": free["w"]}

    def param_groups(self) -> dict[str, list[str]]:
        """Experts: ``beta``; gate: ``w``."""
        return {"experts": ["beta"], "gate": ["w"]}

    # ------------------------------------------------------------------ EM

    def _expert_step(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        tau: torch.Tensor,
        params: ParamDict,
        gate: GateOptions,
        eta: float,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The expert block of :meth:`m_step`: new ``beta`` and diagnostics."""
        raise NotImplementedError

    def m_step(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor,
        params: ParamDict,
        gate: GateOptions,
        eta: float = 1.0,
    ) -> tuple[ParamDict, dict[str, float]]:
        """EM M-step (``eta = 1``) or mirror-descent step with step size ``eta`` in ``(0, 1]``.

        The family is an exponential family with natural parameter ``theta = (beta, w)`` (no
        projection), so the mirror step ``argmin <eta grad L, theta> + D_A(theta, theta_t)`` is the
        dual-space update ``grad A(theta_{t+1}) = (1 - eta) grad A(theta_t) + eta S_t``: moment
        matching with the posteriors mixed with the model's own predictions at ``theta_t``
        (Fruytier et al. 2025; NOTES.md section 1.4). Gate: logistic regression with soft labels
        ``eta tau + (1 - eta) sigma(w_t.x)``, by Newton (ridge ``eta * gate.ridge``, composite
        mirror descent; ball ``||w|| <= gate.radius`` when set). Experts: see the subclasses.
        """
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"eta must be in (0, 1] (got {eta})")
        tau = R[:, 0]
        beta, info = self._expert_step(X, y, tau, params, gate, eta)
        if eta == 1.0:
            labels = R
        else:
            p_t = torch.sigmoid(X @ params["w"])
            t_mix = eta * tau + (1.0 - eta) * p_t
            labels = torch.stack([t_mix, 1.0 - t_mix], dim=1)
        w, steps, rejected = _logistic_step(X, labels, params["w"], gate, eta)
        info = {**info, "gate_newton_steps": steps, "gate_rejected": float(rejected)}
        return {"beta": beta, "w": w}, info

    def _gate_kl(self, old: ParamDict, new: ParamDict, X: torch.Tensor) -> torch.Tensor:
        return _bernoulli_kl(X @ old["w"], X @ new["w"])


class SymMoLinE(_SymmetricMoE):
    """Symmetric mixture of two linear experts ``y | x, z ~ N(z beta.x, sigma^2)``.

    The gate is ``P(z | x) = sigma(z w.x)``; ``sigma`` is known (a hyper-parameter, default 1, the
    paper's "known additive unit Gaussian noise").
    """

    name = "symmoline"
    summary = "symmetric mixture of 2 linear experts N(z beta.x, sigma^2), gate sigma(z w.x)"
    task = "regression"

    class Params(Params):
        """Hyper-parameters of SymMoLinE."""

        sigma: float = Field(1.0, gt=0, description="known noise standard deviation")

    def expert_log_probs(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log N(y_n; z beta.x_n, sigma^2)`` for ``z = +1, -1``, shape ``(n, 2)``."""
        s = self.params.sigma
        m = X @ params["beta"]
        means = torch.stack([m, -m], dim=1)
        return -0.5 * _LOG_2PI - math.log(s) - 0.5 * ((y[:, None] - means) / s).square()

    def predict(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``E[y | x] = (2 sigma(w.x) - 1) beta.x = tanh(w.x / 2) beta.x``, shape ``(n,)``."""
        return torch.tanh(0.5 * (X @ params["w"])) * (X @ params["beta"])

    def _expert_step(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        tau: torch.Tensor,
        params: ParamDict,
        gate: GateOptions,
        eta: float,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``beta_EM = (X^T X)^{-1} X^T ((2 tau - 1) y)`` (NOTES section 1.5); the mirror step is
        ``eta beta_EM + (1 - eta) beta_t``.

        Derivation: ``Q_self(beta) = -sum_n [((beta_t - beta).x_n)^2 + sigma^2] / (2 sigma^2)``, so
        ``eta Q_R + (1 - eta) Q_self`` is maximised by ``(X^T X)^{-1} X^T (eta (2 tau - 1) y +
        (1 - eta) X beta_t)``.
        """
        G = X.T @ X
        L, info = torch.linalg.cholesky_ex(G)
        b = X.T @ ((2.0 * tau - 1.0) * y)
        if int(info) == 0:
            beta = torch.cholesky_solve(b[:, None], L)[:, 0]
        else:
            beta = torch.linalg.lstsq(G, b[:, None]).solution[:, 0]
        if eta != 1.0:
            beta = eta * beta + (1.0 - eta) * params["beta"]
        return beta, {}

    def complete_data_kl(
        self, params_old: ParamDict, params_new: ParamDict, X: torch.Tensor
    ) -> torch.Tensor:
        """``KL_Bern(sigma(w_old.x) || sigma(w_new.x)) + ((beta_old - beta_new).x)^2 / (2 s^2)``.

        Given ``z``, the two Gaussians have means ``z beta.x`` and the same variance.
        """
        d = X @ (params_old["beta"] - params_new["beta"])
        return self._gate_kl(params_old, params_new, X) + 0.5 * d.square() / self.params.sigma**2


class SymMoLogE(_SymmetricMoE):
    """Symmetric mixture of two logistic experts ``P(y | x, z) = sigma(y z beta.x)``.

    Labels: ``y > 0`` is ``+1``, anything else ``-1`` (``{-1, +1}`` or class indices ``{0, 1}``).
    :meth:`predict` returns the probabilities of the classes ``[-1, +1]`` (indices ``0, 1``).
    """

    name = "symmologe"
    summary = "symmetric mixture of 2 logistic experts sigma(y z beta.x), gate sigma(z w.x)"
    task = "classification"

    def __init__(
        self,
        params: Params | None = None,
        *,
        n_features: int,
        n_classes: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ):
        if n_classes not in (None, 2):
            raise ValueError(f"symmologe is binary (n_classes=2), got n_classes={n_classes}")
        super().__init__(params, n_features=n_features, n_classes=2, device=device, dtype=dtype)

    @staticmethod
    def signs(y: torch.Tensor) -> torch.Tensor:
        """Labels as ``+-1``: ``+1`` where ``y > 0``, else ``-1``."""
        return torch.where(y > 0, torch.ones_like(y), -torch.ones_like(y))

    def expert_log_probs(self, params: ParamDict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log sigma(y z beta.x_n)`` for ``z = +1, -1``, shape ``(n, 2)``."""
        u = self.signs(y) * (X @ params["beta"])
        return torch.stack([nnf.logsigmoid(u), nnf.logsigmoid(-u)], dim=1)

    def predict(self, params: ParamDict, X: torch.Tensor) -> torch.Tensor:
        """``[P(y = -1 | x), P(y = +1 | x)]``, shape ``(n, 2)``, with
        ``P(y = +1 | x) = sigma(w.x) sigma(beta.x) + sigma(-w.x) sigma(-beta.x)``."""
        g = torch.sigmoid(X @ params["w"])
        e = torch.sigmoid(X @ params["beta"])
        p = g * e + (1 - g) * (1 - e)
        return torch.stack([1 - p, p], dim=1)

    def _expert_step(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        tau: torch.Tensor,
        params: ParamDict,
        gate: GateOptions,
        eta: float,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Logistic regression of ``u = y z`` on ``x`` with soft targets.

        ``Q_R(beta) = sum_n q_n log sigma(beta.x_n) + (1 - q_n) log sigma(-beta.x_n)`` with
        ``q_n = P(z_n = y_n | x_n, y_n) = (1 + (2 tau_n - 1) y_n) / 2`` (NOTES section 1.5).
        Under the model at ``theta_t``, ``u`` is independent of ``z`` with
        ``P(u = +1) = sigma(beta_t.x)``, so the mirror step uses the targets
        ``eta q + (1 - eta) sigma(beta_t.x)``. Solved by the gate's Newton method (same ridge
        scaled by ``eta``, same ball).
        """
        q = 0.5 * (1.0 + (2.0 * tau - 1.0) * self.signs(y))
        if eta != 1.0:
            q = eta * q + (1.0 - eta) * torch.sigmoid(X @ params["beta"])
        beta, steps, rejected = _logistic_step(
            X, torch.stack([q, 1.0 - q], dim=1), params["beta"], gate, eta
        )
        return beta, {"expert_newton_steps": steps, "expert_rejected": float(rejected)}

    def complete_data_kl(
        self, params_old: ParamDict, params_new: ParamDict, X: torch.Tensor
    ) -> torch.Tensor:
        """``KL_Bern(gate) + KL_Bern(sigma(beta_old.x) || sigma(beta_new.x))``.

        ``(z, y) -> (z, u = y z)`` is a bijection and ``u`` is independent of ``z`` with
        ``P(u = +1 | x) = sigma(beta.x)``.
        """
        return self._gate_kl(params_old, params_new, X) + _bernoulli_kl(
            X @ params_old["beta"], X @ params_new["beta"]
        )


def _to_norm(v: torch.Tensor, norm: float) -> torch.Tensor:
    return v * (norm / v.norm().clamp_min(1e-300))


@hookimpl
def register_models(register: Callable[[type], None]) -> None:
    """Register :class:`SymMoLinE` and :class:`SymMoLogE`."""
    register(SymMoLinE)
    register(SymMoLogE)
