"""The mirror-descent step (``0 < eta < 1``) of the regression MoE (:class:`RegressionMirror`).

The step of Fruytier et al. (see :meth:`RegressionEM.m_step
<moebench_plugins.models.regression.em.RegressionEM.m_step>` for its derivation), from chunked
statistics for linear experts, its diagnostics (``kl_step`` and the change of ``Q``) and the
closed-form complete-data KL.
"""

from __future__ import annotations

import torch

from moebench import ParamDict
from moebench.em import GateOptions

from ..caching import data_cache
from ..gate import DEFAULT_TOL, fit_gate_chunked
from ..kernels import ExpertStats, GateStats, em_pass, gate_pass, solve_experts, weighted_sse_pass
from .numerics import (
    LOG_2PI,
    gate_probs,
    gate_step_rejected,
    noise_from_residuals,
    projected_gate,
    solve_sym,
    weighted_sse,
)

__all__ = ["MIRROR_STATS", "RegressionMirror"]

#: The :class:`~moebench_plugins.models.caching.DataCache` entry of a ``RowChunks`` holding the
#: statistics of the last mirror step on that data: ``(R, (A, W, log_sigma), P, pass of R, pass
#: of P)``, for :meth:`RegressionMirror.mirror_step_diagnostics` of the same step.
MIRROR_STATS = "mirror_stats"


class RegressionMirror:
    """Mirror steps of :class:`~moebench_plugins.models.regression.RegressionMoE` (a mixin of
    it): :meth:`_mirror_step` (linear experts, chunked), :meth:`_mirror_step_experts` (dense),
    :meth:`mirror_step_diagnostics` and :meth:`complete_data_kl`."""

    def mirror_step_unsupported(self) -> str | None:
        """Mirror steps (``eta < 1``) are implemented for linear experts only."""
        if self.params.activation != "linear":
            return (
                f"mirror steps with eta < 1 are implemented for linear experts only, not "
                f"{self.params.activation!r} ones (use eta = 1, i.e. EM)"
            )
        return None

    def _mirror_step(
        self, X: torch.Tensor, y: torch.Tensor, R: torch.Tensor, params: ParamDict,
        gate: GateOptions, eta: float,
    ) -> tuple[ParamDict, dict[str, float]]:
        """The mirror step (``eta < 1``) of linear experts from chunked statistics.

        The same step as :meth:`_mirror_step_experts` and the dense gate solve of :meth:`m_step`
        (equal to rounding): with ``P`` the gate at ``theta_t``, the mixed weights ``w = eta R +
        (1 - eta) P`` and targets give the normal equations ``(eta G_R + (1 - eta) G_P) a =
        eta b_R + (1 - eta) G_P a_t`` (``G``, ``b``: the expert statistics of the labels ``R``
        and ``P``), the mixed residuals ``eta sse_R(a) + (1 - eta) ((a_t - a)' G_P (a_t - a) +
        sigma_t^2 mass_P)``, and the gate's Newton system at ``W_t`` with labels ``T = eta R +
        (1 - eta) P`` is ``q_T = eta q_R + (1 - eta) q_P``, ``grad_T = eta grad_R`` and the
        Hessian of ``R`` (all label rows sum to one).
        """
        chunks = self.chunks(X, y)
        n = chunks.n_rows
        A_old, W_t, log_sigma_t = params["A"], params["W"], params["log_sigma"]
        P = gate_probs(chunks, W_t)
        st_R = em_pass(chunks, A_old, W_t, log_sigma_t, labels=R, expert_stats=True, gate=True)
        st_P = em_pass(chunks, A_old, W_t, log_sigma_t, labels=P, expert_stats=True, gate=True,
                       gate_system=False)
        data_cache(chunks)[MIRROR_STATS] = (
            R, (A_old.clone(), W_t.clone(), log_sigma_t.clone()), P, st_R, st_P)
        eR, eP = st_R.experts, st_P.experts
        GP_a = torch.matmul(eP.G, A_old.unsqueeze(2)).squeeze(2)
        mixed = ExpertStats(mass=eta * eR.mass + (1.0 - eta) * eP.mass,
                            G=eta * eR.G + (1.0 - eta) * eP.G,
                            b=eta * eR.b + (1.0 - eta) * GP_a, yy=eR.yy)
        A = solve_experts(mixed, A_old, n)
        log_sigma = log_sigma_t.clone()
        if self.params.noise != "known":
            sse_R = eR.sse(A)
            if bool((sse_R <= 1e-6 * eR.yy).any()):
                sse_R = weighted_sse_pass(chunks, A, R)  # cancellation in yy - 2 a.b + a'Ga
            D = A_old - A
            spread = (D * torch.matmul(eP.G, D.unsqueeze(2)).squeeze(2)).sum(1)
            res2 = eta * sse_R + (1.0 - eta) * (spread + torch.exp(2.0 * log_sigma_t) * eP.mass)
            floor = 1e-12 * (float(eR.yy.sum()) / n + 1e-300)  # mean(y^2): rows of R sum to 1
            log_sigma = noise_from_residuals(self.params.noise, res2, mixed.mass, floor,
                                             log_sigma, n)
        new = {"A": A, "W": W_t.clone(), "log_sigma": log_sigma}
        labels = (eta * R.T + (1.0 - eta) * P.T).contiguous().T  # samples along the rows
        g = st_R.gate
        first = GateStats(q=eta * g.q + (1.0 - eta) * st_P.gate.q, grad=eta * g.grad,
                          neg_hessian=g.neg_hessian)
        ridge = eta * gate.ridge
        W, info = fit_gate_chunked(
            chunks, labels, W_t, ridge=ridge, max_steps=gate.max_steps, radius=gate.radius,
            tol=DEFAULT_TOL * eta**2, first=first,
        )
        W_old = projected_gate(W_t, gate.radius)
        rejected = gate_step_rejected(info, W_old, W, ridge, n)
        new["W"] = W_old.clone() if rejected else W
        return new, {"gate_newton_steps": float(info["steps"]), "gate_rejected": float(rejected)}

    def _mirror_step_experts(
        self, X: torch.Tensor, y: torch.Tensor, R: torch.Tensor, params: ParamDict, eta: float
    ) -> ParamDict:
        """Expert and noise part of the mirror step for linear experts (see :meth:`m_step`)."""
        F = self.features(X)
        n, d = F.shape
        P = torch.softmax(F @ params["W"].T, dim=1)
        mu = F @ params["A"].T  # (n, k) expert means at theta_t
        var_t = torch.exp(2.0 * params["log_sigma"])  # (k,)
        Wt = eta * R + (1.0 - eta) * P  # mixed weights, > 0 where P > 0
        Y = (eta * R * y[:, None] + (1.0 - eta) * P * mu) / Wt.clamp_min(1e-300)
        A_old = params["A"]
        A = A_old.clone()
        eye = torch.eye(d, dtype=F.dtype, device=F.device)
        mass = Wt.sum(dim=0)
        for i in range(self.n_experts):
            w = Wt[:, i]
            if float(mass[i]) <= 1e-12 * n:
                continue
            old = weighted_sse(F, Y[:, i], w, A_old[i], "linear")
            G = F.T @ (w[:, None] * F)
            lam = 1e-10 * (G.diagonal().mean() + 1e-300)
            cand = solve_sym(G + lam * eye, F.T @ (w * Y[:, i]))
            if torch.isfinite(cand).all() and weighted_sse(F, Y[:, i], w, cand, "linear") <= old:
                A[i] = cand
        log_sigma = params["log_sigma"].clone()
        if self.params.noise != "known":
            fit = F @ A.T
            res2 = eta * R * (y[:, None] - fit).square() + (1.0 - eta) * P * (
                (mu - fit).square() + var_t
            )
            floor = 1e-12 * (y.square().mean() + 1e-300)
            if self.params.noise == "shared":
                s2 = (res2.sum() / Wt.sum()).clamp_min(floor)
                log_sigma = torch.full_like(log_sigma, 0.5) * torch.log(s2)
            else:
                s2 = (res2.sum(dim=0) / mass.clamp_min(1e-300)).clamp_min(floor)
                ok = mass > 1e-12 * n
                log_sigma = torch.where(ok, 0.5 * torch.log(s2), log_sigma)
        return {"A": A, "W": params["W"].clone(), "log_sigma": log_sigma}

    def mirror_step_diagnostics(
        self, params_old: ParamDict, params_new: ParamDict, X: torch.Tensor, y: torch.Tensor,
        R: torch.Tensor,
    ) -> tuple[float, float] | None:
        """``(mean KL, Q change)`` of a mirror step from chunked statistics (linear experts).

        ``mean(complete_data_kl(old, new, X))`` and ``q_value(new, X, y, R) - q_value(old, X, y,
        R)`` (equal to rounding) without ``(n, k)`` temporaries: with ``P`` the gate at ``old``,
        the gate terms are the objectives ``sum_n sum_i L_ni log p_i(x_n; W)`` of the labels
        ``L = R, P`` at both gates, and the expert terms follow from the expert statistics of
        ``R`` and ``P`` at ``old`` (``sum_n P_ni (m_old - m_new)^2 = (a_old - a_new)' G_P
        (a_old - a_new)``, the residual sums of ``R``). ``None`` for non-linear experts.

        Parameters
        ----------
        params_old, params_new
            The parameters before and after the step.
        X, y
            Training data.
        R
            The responsibilities ``(n, k)`` at ``params_old``.
        """
        if self.params.activation != "linear" or self._differentiable(params_new, X, y):
            return None
        chunks = self.chunks(X, y)
        n = chunks.n_rows
        A0, W0, ls0 = params_old["A"], params_old["W"], params_old["log_sigma"]
        A1, W1, ls1 = params_new["A"], params_new["W"], params_new["log_sigma"]
        hit = data_cache(chunks).get(MIRROR_STATS)
        if hit is not None and hit[0] is R and all(
                torch.equal(a, b) for a, b in zip(hit[1], (A0, W0, ls0), strict=True)):
            P, st_R, st_P = hit[2:]  # the statistics of the mirror step from these parameters
        else:
            P = gate_probs(chunks, W0)
            st_R = em_pass(chunks, A0, W0, ls0, labels=R, expert_stats=True, gate=True,
                           gate_system=False)
            st_P = em_pass(chunks, A0, W0, ls0, labels=P, expert_stats=True, gate=True,
                           gate_system=False)
        q_R1 = gate_pass(chunks, R, W1, system=False).q
        q_P1 = gate_pass(chunks, P, W1, system=False).q
        eR, eP = st_R.experts, st_P.experts
        D = A0 - A1
        spread = (D * torch.matmul(eP.G, D.unsqueeze(2)).squeeze(2)).sum(1)
        gauss = (eP.mass * ((ls1 - ls0) + 0.5 * torch.exp(2 * (ls0 - ls1)) - 0.5)
                 + 0.5 * torch.exp(-2 * ls1) * spread)
        kl = (st_P.gate.q - q_P1 + float(gauss.sum())) / n
        # sum_n R_ni log N(y_n; a_i f_n, sigma_i^2) from the statistics of R
        experts = [float((eR.mass * (-0.5 * LOG_2PI - ls)
                          - 0.5 * torch.exp(-2 * ls) * eR.sse(A)).sum())
                   for A, ls in ((A1, ls1), (A0, ls0))]
        dq = (q_R1 - st_R.gate.q + experts[0] - experts[1]) / n
        return kl, dq

    def complete_data_kl(
        self, params_old: ParamDict, params_new: ParamDict, X: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample ``KL(p(y, z | x; old) || p(y, z | x; new))`` in closed form, shape ``(n,)``.

        ``sum_i pi_i^old [log pi_i^old - log pi_i^new + KL(N(m_i^old, s_i^old^2) ||
        N(m_i^new, s_i^new^2))]`` with the Gaussian KL ``log(s_new / s_old) + (s_old^2 +
        (m_old - m_new)^2) / (2 s_new^2) - 1/2``.
        """
        lg_old = self.gate_log_probs(params_old, X)
        lg_new = self.gate_log_probs(params_new, X)
        m_old = self.expert_means(params_old, X)
        m_new = self.expert_means(params_new, X)
        ls_old, ls_new = params_old["log_sigma"], params_new["log_sigma"]
        gauss = (ls_new - ls_old) + 0.5 * (
            torch.exp(2 * (ls_old - ls_new)) + (m_old - m_new).square() * torch.exp(-2 * ls_new)
        ) - 0.5
        return (torch.exp(lg_old) * (lg_old - lg_new + gauss)).sum(dim=1)
