"""mirror-em and gradient-em, the mirror step of the regression MoE, and the gate's feasible set.

The mirror-step checks verify the derivation in ``RegressionMoE.m_step`` against an independent
construction of the complete-data exponential family: per sample, ``p(y, z = i | x)`` has
statistics ``(1[z=i], 1[z=i] y, 1[z=i] y^2)`` and natural parameters
``eta_i = (log pi_i - log s_i - m_i^2 / (2 s_i^2) - log(2 pi) / 2, m_i / s_i^2, -1 / (2 s_i^2))``
with log-partition
``A(eta) = log sum_i exp(eta_i0 - eta_i1^2 / (4 eta_i2) + log(pi / -eta_i2) / 2)``.
``L`` as a function of these coordinates, its gradient (autograd), ``A``'s Bregman divergence and
the dual coordinates ``grad A`` are all computed from this construction, not from the model code.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pydantic
import pytest
import torch

from moebench import InitSpec, Problem
from moebench.em import GateOptions
from moebench.errors import SuiteError, UnsupportedProblem
from moebench.suite import parse_suite, resolve
from moebench.testing import check_algorithm
from moebench_plugins.algorithms.gradient_em import GradientEM
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.algorithms.mirror_em import MirrorEM
from moebench_plugins.datasets.synthetic import SyntheticMoE
from moebench_plugins.models.gate import fit_softmax_gate, gate_objective
from moebench_plugins.models.regression import RegressionMoE

# ----------------------------------------------------------------------------------- helpers


def setup(noise="per_expert", k=3, n=1500, d=5, sigma=0.5, seed=0, activation="linear"):
    data = SyntheticMoE(
        SyntheticMoE.Params(n=n, n_test=10, d=d, k=k, sigma=sigma, activation=activation)
    ).load(seed)
    model = RegressionMoE(
        RegressionMoE.Params(k=k, noise=noise, sigma=1.0, activation=activation), n_features=d
    )
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    init = model.init_params(InitSpec(scheme="random"), torch.Generator().manual_seed(1))
    return model, X, y, init


def run(algorithm, model, X, y, init, max_iter):
    """Drive ``algorithm``; return final params, objectives, extras and all iterates."""
    objectives, extras, iterates = [], [], []

    def callback(it):
        objectives.append(it.objective)
        extras.append(dict(it.extras))
        iterates.append({k: v.clone() for k, v in it.params.items()})
        return it.iteration < max_iter

    problem = Problem(model, X, y, torch.Generator().manual_seed(0))
    final = algorithm.fit(problem, {k: v.clone() for k, v in init.items()}, callback)
    return final, objectives, extras, iterates


def assert_monotone(objectives, rel=1e-10):
    for t, (before, after) in enumerate(zip(objectives, objectives[1:], strict=False)):
        assert after <= before + rel * abs(before), (t, before, after)


def natural(model: RegressionMoE, params: dict, X: torch.Tensor) -> torch.Tensor:
    """Per-sample natural parameters ``(n, k, 3)`` of the complete-data family (differentiable)."""
    logpi = model.gate_log_probs(params, X)
    m = model.expert_means(params, X)
    ls = params["log_sigma"].expand_as(m)
    s2 = torch.exp(2 * ls)
    c = logpi - ls - m.square() / (2 * s2) - 0.5 * math.log(2 * math.pi)
    return torch.stack([c, m / s2, -0.5 / s2], dim=2)


def log_partition(eta: torch.Tensor) -> torch.Tensor:
    """Per-sample ``A(eta)``, shape ``(n,)``."""
    e0, e1, e2 = eta.unbind(dim=2)
    return torch.logsumexp(e0 - e1.square() / (4 * e2) + 0.5 * torch.log(math.pi / -e2), dim=1)


def nll_natural(eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean ``-log p(y | x)`` as a function of the natural parameters."""
    e0, e1, e2 = eta.unbind(dim=2)
    stat = e0 + e1 * y[:, None] + e2 * y[:, None].square()
    return -(torch.logsumexp(stat, dim=1) - log_partition(eta)).mean()


def grad_A(eta: torch.Tensor) -> torch.Tensor:
    """Dual (mean) coordinates ``grad A(eta)`` per sample."""
    e = eta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(log_partition(e).sum(), e)
    return g


# ----------------------------------------------------------------------------------- gate ball


def soft_labels(n=400, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = torch.as_tensor(rng.standard_normal((n, d)))
    V = torch.as_tensor(rng.standard_normal((k, d))) * 3
    R = torch.softmax(X @ V.T + 0.3 * torch.as_tensor(rng.standard_normal((n, k))), dim=1)
    return X, R


@pytest.mark.parametrize("ridge", [0.0, 1e-3])
def test_gate_m_step_with_radius_stays_in_the_ball_and_reaches_the_constrained_optimum(ridge):
    X, R = soft_labels()
    radius = 1.0
    W0 = torch.full((3, 4), 2.0, dtype=torch.float64)  # infeasible: projected first
    W, info = fit_softmax_gate(X, R, W0, ridge=ridge, radius=radius, max_steps=50)
    assert info["projected_start"] and info["converged"]
    norms = W[:-1].norm(dim=1)
    assert float(norms.max()) <= radius * (1 + 1e-12)
    assert (W[-1] == 0).all()
    start = W0.clone()
    start[:-1] *= radius / start[:-1].norm(dim=1, keepdim=True)
    assert info["J"] > float(gate_objective(X, R, start, ridge)) + 0.1
    # KKT: the gradient of J is an outward normal (mu v / r, mu >= 0) on active rows, 0 elsewhere.
    Wv = W.clone().requires_grad_(True)
    gate_objective(X, R, Wv, ridge).backward()
    for a in range(2):
        g, v = Wv.grad[a], W[a]
        if float(v.norm()) < radius * (1 - 1e-9):
            assert float(g.norm()) < 1e-7
        else:
            normal = v / v.norm()
            assert float(g @ normal) >= -1e-9
            assert float((g - (g @ normal) * normal).norm()) < 1e-7
    # and it beats random feasible points
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        P = W.clone()
        P[:-1] += 0.1 * torch.randn(2, 4, generator=rng, dtype=torch.float64)
        P[:-1] *= torch.clamp(radius / P[:-1].norm(dim=1, keepdim=True), max=1.0)
        assert float(gate_objective(X, R, P, ridge)) <= info["J"] + 1e-12


def test_gate_radius_inactive_gives_the_unconstrained_solution():
    X, R = soft_labels(seed=2)
    W0 = torch.zeros(3, 4, dtype=torch.float64)
    W_free, _ = fit_softmax_gate(X, R, W0, ridge=1e-3)
    W_ball, info = fit_softmax_gate(X, R, W0, ridge=1e-3, radius=1e3)
    assert not info["projected_start"]
    assert torch.allclose(W_free, W_ball, atol=1e-9)


def test_ridge_zero_needs_a_radius_everywhere():
    X, R = soft_labels()
    W0 = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="radius"):
        fit_softmax_gate(X, R, W0, ridge=0.0)
    with pytest.raises(ValueError, match="gate_radius"):
        GateOptions(ridge=0.0)
    GateOptions(ridge=0.0, radius=2.0)
    for cls in (JointEM, MirrorEM):
        with pytest.raises(pydantic.ValidationError, match="gate_ridge=0 needs a gate_radius"):
            cls.Params(gate_ridge=0)
        cls.Params(gate_ridge=0, gate_radius=3.0)


def test_suite_rejects_gate_ridge_zero_without_radius(fresh_plugins):
    text = textwrap.dedent("""
        name: ridge0
        datasets:
          - name: synthetic-moe
        algorithms:
          - name: mirror-em
            params: {gate_ridge: 0, eta: 0.5}
          - name: joint-em
            params: {gate_ridge: 0, gate_radius: 5}
    """)
    with pytest.raises(SuiteError) as info:
        resolve(parse_suite(text, "s.yaml"), "s.yaml")
    ((where, message),) = info.value.problems
    assert where.startswith("algorithms[0].params")
    assert "gate_ridge" in message and "gate_radius" in message


def test_em_with_a_radius_keeps_the_gate_feasible_and_is_monotone():
    model, X, y, init = setup()
    for eta in (1.0, 0.6):
        alg = MirrorEM(MirrorEM.Params(eta=eta, tol=0, gate_ridge=0.0, gate_radius=0.4))
        final, objectives, _, iterates = run(alg, model, X, y, init, 15)
        assert_monotone(objectives[1:])  # the first step may project an infeasible init
        for p in iterates[1:]:
            assert float(p["W"][:-1].norm(dim=1).max()) <= 0.4 * (1 + 1e-12)


# ----------------------------------------------------------------------------------- mirror-em


def test_mirror_em_with_unit_step_is_joint_em():
    model, X, y, init = setup(noise="per_expert")
    a, obj_a, _, it_a = run(JointEM(JointEM.Params(tol=0)), model, X, y, init, 20)
    b, obj_b, ext_b, it_b = run(MirrorEM(MirrorEM.Params(eta=1.0, tol=0)), model, X, y, init, 20)
    assert len(it_a) == len(it_b) == 21
    diff = max(float((pa[k] - pb[k]).abs().max()) for pa, pb in zip(it_a, it_b, strict=True)
               for k in pa)
    assert diff < 1e-12
    # joint-em takes the fused one-pass EM step, mirror-em the dense one: equal to rounding
    np.testing.assert_allclose(obj_a, obj_b, rtol=1e-13)
    assert {"kl_step", "md_objective", "gate_newton_steps"} <= set(ext_b[1])


@pytest.mark.parametrize("noise", ["known", "per_expert", "shared"])
def test_mirror_em_is_monotone_and_slower_for_smaller_steps(noise):
    model, X, y, init = setup(noise=noise)
    curves = {}
    for eta in (0.3, 0.5, 0.7, 1.0):
        final, objectives, extras, _ = run(
            MirrorEM(MirrorEM.Params(eta=eta, tol=0)), model, X, y, init, 25
        )
        assert_monotone(objectives)
        assert all(e["kl_step"] >= 0 and e["md_objective"] <= 1e-12 for e in extras[1:])
        curves[eta] = np.array(objectives)
        if noise == "shared":
            assert torch.allclose(final["log_sigma"], final["log_sigma"][0])
        if noise == "known":
            assert torch.equal(final["log_sigma"], init["log_sigma"])
    assert curves[1.0][-1] < curves[1.0][0] - 0.2
    # eta = 0.5 is never ahead of EM, iteration by iteration
    assert np.all(curves[0.5] >= curves[1.0] - 1e-9 * np.abs(curves[1.0]))
    assert curves[0.3][10] > curves[0.7][10] > curves[1.0][10]


def test_mirror_step_objective_and_kl_in_natural_coordinates():
    """(c): <eta grad L, theta+ - theta> + D_A(theta+, theta) < 0, computed independently."""
    model, X, y, init = setup(noise="per_expert")
    params = init
    gate = GateOptions(ridge=1e-6, max_steps=50)
    for t in range(4):
        eta = (0.3, 0.7, 1.0, 0.5)[t]
        R = model.posterior(params, X, y)
        new, _ = model.m_step(X, y, R, params, gate, eta=eta)
        e_t = natural(model, params, X).detach().requires_grad_(True)
        (gL,) = torch.autograd.grad(nll_natural(e_t, y), e_t)
        e_t = e_t.detach()
        e_new = natural(model, new, X).detach()
        delta = e_new - e_t
        bregman = log_partition(e_new) - log_partition(e_t) - (grad_A(e_t) * delta).sum((1, 2))
        # A = 0 on the model (normalised): the Bregman divergence is the KL, per sample
        assert float(log_partition(e_t).abs().max()) < 1e-12
        kl = model.complete_data_kl(params, new, X)
        assert torch.allclose(bregman, kl, rtol=1e-7, atol=1e-12)
        md = eta * float((gL * delta).sum()) + float(bregman.mean())
        assert md < 0
        # mirror-em reports the same number without natural coordinates
        dq = float(model.q_value(new, X, y, R) - model.q_value(params, X, y, R))
        assert -eta * dq + (1 - eta) * float(kl.mean()) == pytest.approx(md, rel=1e-7)
        # the step beats points between theta_t and theta+ and beyond it
        for s in (0.5, 1.5):
            mid = {k: params[k] + s * (new[k] - params[k]) for k in params}
            e_mid = natural(model, mid, X).detach()
            d_mid = e_mid - e_t
            breg_mid = log_partition(e_mid) - log_partition(e_t) - (grad_A(e_t) * d_mid).sum((1, 2))
            assert md <= eta * float((gL * d_mid).sum()) + float(breg_mid.mean()) + 1e-12
        params = new


@pytest.mark.parametrize("noise", ["known", "per_expert"])
def test_small_mirror_steps_follow_minus_grad_L_in_dual_coordinates(noise):
    """(b): (J^T (grad A(theta+) - grad A(theta_t))) / eta -> -grad L(theta_t) as eta -> 0.

    ``J`` is the Jacobian of the natural parameters in the free parameters ``phi``: the change of
    the dual coordinates, seen through the model's tangent space, is ``-eta grad L``. The limit
    includes the ridge term (composite mirror descent), ``-ridge * W``.
    """
    model, X, y, init = setup(noise=noise, k=2)
    params = init
    gate = GateOptions(ridge=1e-6, max_steps=50)
    for _ in range(3):  # move away from the init a little
        params, _ = model.m_step(X, y, model.posterior(params, X, y), params, gate)
    free = {k: v.clone().requires_grad_(True) for k, v in model.free_params(params).items()}
    loss = model.nll(model.from_free(free, params), X, y)
    loss = loss + 0.5 * gate.ridge * model.from_free(free, params)["W"].square().sum()
    grads = torch.autograd.grad(loss, list(free.values()))
    target = torch.cat([g.reshape(-1) for g in grads])
    R = model.posterior(params, X, y)
    mu_t = grad_A(natural(model, params, X))
    errors = []
    for eta in (1e-1, 1e-2, 1e-3):
        new, _ = model.m_step(X, y, R, params, gate, eta=eta)
        dmu = grad_A(natural(model, new, X)) - mu_t
        e_phi = natural(model, model.from_free(free, params), X)
        proj = torch.autograd.grad((e_phi * dmu).sum() / X.shape[0], list(free.values()))
        got = torch.cat([g.reshape(-1) for g in proj]) / eta
        errors.append(float((got + target).norm() / target.norm()))
    assert errors[0] > 5 * errors[1]  # first-order convergence in eta
    assert errors[1] > errors[2]
    assert errors[2] < 1e-4


def test_mirror_steps_need_linear_experts():
    model, X, y, init = setup(activation="sigmoid", noise="shared")
    alg = MirrorEM(MirrorEM.Params(eta=0.5))
    reason = alg.unsupported_reason(model)
    assert reason and "linear experts" in reason and "sigmoid" in reason
    assert MirrorEM(MirrorEM.Params(eta=1.0)).unsupported_reason(model) is None
    R = model.posterior(init, X, y)
    with pytest.raises(UnsupportedProblem, match="linear experts"):
        model.m_step(X, y, R, init, GateOptions(), eta=0.5)
    with pytest.raises(UnsupportedProblem):
        run(alg, model, X, y, init, 3)
    with pytest.raises(pydantic.ValidationError):
        MirrorEM.Params(eta=1.5)
    with pytest.raises(pydantic.ValidationError):
        MirrorEM.Params(eta=0.0)


# ----------------------------------------------------------------------------------- gradient-em


def test_gradient_em_decreases_the_nll_and_respects_constraints():
    model, X, y, init = setup(noise="known", sigma=1.0, k=2)
    final, objectives, extras, _ = run(GradientEM(), model, X, y, init, 40)
    assert all(math.isfinite(o) for o in objectives)
    assert objectives[-1] < objectives[0] - 0.05
    assert objectives[-1] < objectives[20] < objectives[0]
    assert (final["W"][-1] == 0).all()
    assert torch.equal(final["log_sigma"], init["log_sigma"])
    assert extras[1]["expert_step"] == 0.5 and extras[1]["gate_step"] == 1.0
    assert extras[1]["q_increase"] > 0


@pytest.mark.parametrize("noise", ["per_expert", "shared"])
def test_gradient_em_with_backtracking_is_monotone(noise):
    model, X, y, init = setup(noise=noise, sigma=0.3)
    alg = GradientEM(GradientEM.Params(step_rule="backtracking", expert_lr=4.0, gate_lr=8.0))
    final, objectives, extras, _ = run(alg, model, X, y, init, 30)
    assert_monotone(objectives)
    assert objectives[-1] < objectives[0] - 0.2
    assert any(e["expert_step"] < 4.0 for e in extras[1:])  # backtracking was needed
    assert all(e["q_increase"] >= 0 for e in extras[1:])
    if noise == "shared":
        assert torch.allclose(final["log_sigma"], final["log_sigma"][0])
    # EM is faster per iteration
    _, em_objectives, _, _ = run(JointEM(JointEM.Params(tol=0)), model, X, y, init, 30)
    assert em_objectives[-1] <= objectives[-1]


def test_conformance_kit():
    assert check_algorithm("mirror-em")
    assert check_algorithm("mirror-em", {"eta": 0.5})
    assert check_algorithm("gradient-em")
    assert check_algorithm("gradient-em", {"step_rule": "backtracking"})
