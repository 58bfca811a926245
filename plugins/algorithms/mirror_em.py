"""Projected mirror descent in the complete-data KL geometry (Fruytier, Mokhtari, Sanghavi 2025).

Fruytier et al. (ICML 2025) show that, when the complete-data conditional ``p(y, z | x; theta)``
is an exponential family with log-partition ``A(x; theta)``, EM is mirror descent on the training
NLL ``L`` with mirror map ``A_bar = mean_n A(x_n; .)`` and unit step:

.. math::

    \\theta_{t+1} = \\arg\\min_{\\theta \\in \\Omega}
        \\langle \\eta \\nabla L(\\theta_t), \\theta - \\theta_t \\rangle
        + D_{\\bar A}(\\theta, \\theta_t),
    \\qquad D_{\\bar A}(\\theta, \\theta_t)
        = \\frac1n \\sum_n \\mathrm{KL}\\big(p(\\cdot, \\cdot \\mid x_n; \\theta_t)
          \\,\\|\\, p(\\cdot, \\cdot \\mid x_n; \\theta)\\big),

with ``eta = 1``. ``mirror-em`` takes the step size ``eta`` as a parameter; each model family's
:meth:`~moebench.em.SupportsEM.m_step` computes the step (responsibilities mixed
with the model's own complete-data distribution). ``eta > 1`` is not allowed: ``L`` is 1-smooth
relative to ``A_bar`` (``A_bar - L`` is convex), so steps up to 1 are guaranteed to decrease ``L``
and 1 is the largest step for which the standard relative-smoothness analysis holds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field

from moebench import Algorithm, Callback, Model, ParamDict, Problem, hookimpl
from moebench.em import EMParams

from .joint_em import needs_m_step, run_em

__all__ = ["MIRROR_FAMILIES", "MirrorEM", "MirrorEMParams"]

#: The model families whose M-step takes mirror steps with ``eta < 1`` (named in the skip
#: message of the others; ``tests/plugins/algorithms/test_mirror_gradient_em.py`` keeps it true).
MIRROR_FAMILIES = ("regression-moe with linear experts (not sigmoid or relu: their cells are "
                   "skipped), logistic-moe, deep-moe, symmoline, symmologe")


class MirrorEMParams(EMParams):
    """Parameters of mirror EM: the step size ``eta`` and the gate M-step's settings."""

    eta: float = Field(
        1.0,
        gt=0,
        le=1,
        description="mirror-descent step size in (0, 1]; 1 is EM. Larger steps are not allowed: "
        "the NLL is 1-smooth relative to the complete-data log-partition, so only eta <= 1 is "
        "guaranteed to decrease it. eta < 1 needs linear experts in regression-moe (sigmoid and "
        "relu experts have no mirror step: those cells are skipped)",
    )


class MirrorEM(Algorithm):
    """Mirror descent with mirror map the complete-data log-partition; ``eta = 1`` is EM.

    Each iteration computes the responsibilities ``R`` at ``theta_t`` and takes the model's
    mirror step ``argmax eta Q_R + (1 - eta) Q_self`` (projected onto ``||w_i|| <= gate_radius``
    when set). ``extras`` reports, besides the M-step's diagnostics:

    ``kl_step``
        ``D_A(theta_{t+1}, theta_t)``: the mean over samples of
        ``KL(p(y, z | x; theta_t) || p(y, z | x; theta_{t+1}))`` (closed form).
    ``md_objective``
        ``<eta grad L(theta_t), theta_{t+1} - theta_t> + D_A(theta_{t+1}, theta_t)``, the mirror
        step's objective relative to ``theta_t`` (``<= 0`` for an exact step). It is computed
        without natural coordinates from the exponential-family identity
        ``Q_R(theta) - Q_R(theta_t) = -<grad L(theta_t), theta - theta_t> - D_A(theta, theta_t)``:
        ``md_objective = -eta (Q_R(theta_{t+1}) - Q_R(theta_t)) + (1 - eta) kl_step``.

    Both are omitted for families without :meth:`SupportsEM.complete_data_kl`.
    """

    name = "mirror-em"
    summary = (
        "projected mirror descent in the complete-data KL geometry (Fruytier et al. 2025); "
        "eta = 1 is EM"
    )
    Params = MirrorEMParams

    def unsupported_reason(self, model: Model) -> str | None:
        """``None`` for :class:`SupportsEM` families that support the requested step size."""
        reason = needs_m_step(self.name, model)
        if reason:
            return reason
        if self.params.eta != 1.0:
            reason = model.mirror_step_unsupported()
            if reason:
                return (f"{self.name} with eta={self.params.eta}: {reason}. Mirror steps with "
                        f"eta < 1 are implemented for: {MIRROR_FAMILIES}")
        return None

    @torch.no_grad()
    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Run mirror steps from ``init`` until ``callback`` returns ``False`` or the NLL stalls.

        Parameters
        ----------
        problem
            Model family (a :class:`SupportsEM`), training data and generator (unused).
        init
            Starting parameters.
        callback
            Receives the training NLL as objective; ``extras`` as described in the class.

        Returns
        -------
        ParamDict
            The last parameters.
        """
        model = problem.model
        X, y = problem.X, problem.y
        eta = float(self.params.eta)

        def diagnostics(old: ParamDict, new: ParamDict, R: torch.Tensor) -> dict[str, float]:
            fast = getattr(model, "mirror_step_diagnostics", None)
            both = fast(old, new, X, y, R) if fast is not None else None
            if both is not None:  # the family's chunked form of the two lines below
                kl, dq = both
                return {"kl_step": kl, "md_objective": -eta * dq + (1.0 - eta) * kl}
            try:
                kl = float(model.complete_data_kl(old, new, X).mean())
            except NotImplementedError:
                return {}
            dq = float(model.q_value(new, X, y, R) - model.q_value(old, X, y, R))
            return {"kl_step": kl, "md_objective": -eta * dq + (1.0 - eta) * kl}

        return run_em(self, problem, init, callback, eta=eta, extras_hook=diagnostics)


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`MirrorEM`."""
    register(MirrorEM)
