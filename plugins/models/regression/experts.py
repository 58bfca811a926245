"""The experts' and noise's M-step of the regression MoE (:class:`ExpertMStep`).

Linear experts are weighted least-squares solves from the chunked sufficient statistics;
sigmoid and ReLU experts take damped Gauss-Newton steps on the dense data.
"""

from __future__ import annotations

import torch

from moebench import ParamDict

from ..kernels import (
    ExpertStats,
    LabelFn,
    RowChunks,
    activate,
    em_pass,
    solve_experts,
    weighted_sse_pass,
)
from .numerics import gauss_newton, noise_from_residuals, solve_sym, weighted_sse

__all__ = ["ExpertMStep"]


class ExpertMStep:
    """The M-step of the experts and the noise, the gate left unchanged (a mixin of
    :class:`~moebench_plugins.models.regression.RegressionMoE`)."""

    def m_step_experts(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        R: torch.Tensor,
        params: ParamDict,
        *,
        gn_steps: int = 5,
    ) -> ParamDict:
        """EM M-step for the experts and the noise, the gate left unchanged.

        For linear experts, each ``a_i`` is the weighted least-squares fit with weights
        ``R[:, i]`` (plus a tiny ridge for stability). For sigmoid and ReLU experts, ``gn_steps``
        damped Gauss-Newton steps on the weighted squared error are taken from the current
        ``a_i``. A new ``a_i`` is kept only if it does not increase the weighted squared error, so
        the expected complete-data log-likelihood never decreases. The noise is then updated:
        ``shared``: pooled weighted residual variance; ``per_expert``: weighted residual variance
        of each expert; ``known``: unchanged.

        Parameters
        ----------
        X, y
            Inputs ``(n, d)`` and targets ``(n,)``.
        R
            Responsibilities ``(n, k)``.
        params
            Current parameters.
        gn_steps
            Gauss-Newton steps for non-linear experts.

        Returns
        -------
        ParamDict
            New parameters (``W`` copied unchanged).
        """
        if self.params.activation == "linear":
            chunks = self.chunks(X, y)
            stats = em_pass(chunks, params["A"], params["W"], params["log_sigma"], labels=R,
                            expert_stats=True)
            return self._experts_from_stats(chunks, R, params, stats.experts)
        F = self.features(X)
        n, d = F.shape
        act = self.params.activation
        A_old = params["A"]
        A = A_old.clone()
        eye = torch.eye(d, dtype=F.dtype, device=F.device)
        mass = R.sum(dim=0)
        for i in range(self.n_experts):
            r = R[:, i]
            if float(mass[i]) <= 1e-12 * n:
                continue  # an expert without responsibility keeps its parameters
            old_sse = weighted_sse(F, y, r, A_old[i], act)
            if act == "linear":
                G = F.T @ (r[:, None] * F)
                lam = 1e-10 * (G.diagonal().mean() + 1e-300)
                cand = solve_sym(G + lam * eye, F.T @ (r * y))
                if torch.isfinite(cand).all() and weighted_sse(F, y, r, cand, act) <= old_sse:
                    A[i] = cand
            else:
                A[i] = gauss_newton(F, y, r, A_old[i], act, gn_steps, eye)
        log_sigma = params["log_sigma"].clone()
        if self.params.noise != "known":
            res2 = (y[:, None] - activate(F @ A.T, act)).square()
            floor = 1e-12 * (y.square().mean() + 1e-300)
            if self.params.noise == "shared":
                s2 = ((R * res2).sum() / R.sum()).clamp_min(floor)
                log_sigma = torch.full_like(log_sigma, 0.5) * torch.log(s2)
            else:
                s2 = ((R * res2).sum(dim=0) / mass.clamp_min(1e-300)).clamp_min(floor)
                ok = mass > 1e-12 * n
                log_sigma = torch.where(ok, 0.5 * torch.log(s2), log_sigma)
        return {"A": A, "W": params["W"].clone(), "log_sigma": log_sigma}

    def _experts_from_stats(
        self, chunks: RowChunks, R: torch.Tensor | LabelFn, params: ParamDict,
        stats: ExpertStats,
    ) -> ParamDict:
        """Linear experts and noise from the sufficient statistics (see :meth:`m_step_experts`)."""
        n = chunks.n_rows
        A = solve_experts(stats, params["A"], n)
        log_sigma = params["log_sigma"].clone()
        if self.params.noise != "known":
            res2 = stats.sse(A)
            if bool((res2 <= 1e-6 * stats.yy).any()):
                # Cancellation in yy - 2 a.b + a'Ga: sum the residuals exactly.
                res2 = weighted_sse_pass(chunks, A, R)
            res2 = res2.clamp_min(0.0)
            mass = stats.mass
            # mean(y^2) when the responsibilities sum to one per sample, as in the dense path
            floor = 1e-12 * (float(stats.yy.sum() / mass.sum().clamp_min(1e-300)) + 1e-300)
            log_sigma = noise_from_residuals(self.params.noise, res2, mass, floor, log_sigma, n)
        return {"A": A, "W": params["W"].clone(), "log_sigma": log_sigma}
