"""tensor-em (Makkuva et al. 2019, Algorithms 1-2): CQT, moments, decompositions, EM, metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pydantic
import pytest
import torch

from moebench import EvalContext, InitSpec, Problem
from moebench.density import GaussianMixtureDensity
from moebench.errors import UnsupportedProblem
from moebench.testing import check_algorithm
from moebench_plugins.algorithms.tensor_em import TensorEM
from moebench_plugins.datasets.synthetic import SyntheticMoE
from moebench_plugins.metrics.makkuva import GatingFit, RegressorFit, bottleneck_assignment
from moebench_plugins.models.regression import RegressionMoE
from moebench_plugins.models.spectral import (
    GAUSSIAN_SCORE,
    MixtureScore,
    cqt_coefficients,
    estimate_regressors,
    orth_als,
    score_for,
    tensor_power_method,
    whitened_moments,
)

# ------------------------------------------------------------------------------------ helpers


def make_problem(n, d, k, sigma=0.1, seed=0, init_seed=1, **dataset):
    data = SyntheticMoE(
        SyntheticMoE.Params(n=n, n_test=10, d=d, k=k, sigma=sigma, **dataset)
    ).load(seed)
    model = RegressionMoE(
        RegressionMoE.Params.model_validate(data.model.params), n_features=data.n_features
    )
    truth = model.as_tensors(data.truth)
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    init = model.init_params(InitSpec(), torch.Generator().manual_seed(init_seed))
    return model, truth, X, y, init


def run(model, X, y, init, max_iter, seed=0, **params):
    """Fit tensor-em for at most ``max_iter`` iterations; return final params and the log."""
    log = []

    def callback(it):
        log.append((it.iteration, {k: v.clone() for k, v in it.params.items()}, it.objective,
                    dict(it.extras)))
        return it.iteration < max_iter

    algorithm = TensorEM(TensorEM.Params(**params))
    problem = Problem(model, X, y, torch.Generator().manual_seed(seed))
    final = algorithm.fit(problem, {k: v.clone() for k, v in init.items()}, callback)
    return final, log


def fits(model, params, truth, X, y):
    ctx = EvalContext(model, params, X, y, X, y, truth)
    return RegressorFit()(ctx), GatingFit()(ctx)


def random_orthogonal(p, generator):
    Q, _ = torch.linalg.qr(torch.randn(p, p, dtype=torch.float64, generator=generator))
    return Q


# ------------------------------------------------------------------------------------- CQT


@pytest.mark.parametrize("sigma", [0.0, 0.1, 0.5, 2.0])
def test_cqt_linear_closed_forms(sigma):
    alpha, beta, gamma, c3, c2 = cqt_coefficients("linear", sigma)
    assert alpha == pytest.approx(0, abs=1e-12)
    assert beta == pytest.approx(-3 * (1 + sigma**2), abs=1e-12)
    assert gamma == pytest.approx(0, abs=1e-12)
    assert c3 == pytest.approx(6, abs=1e-12)
    assert c2 == pytest.approx(2, abs=1e-12)


# NOTES.md §2.4 table: (alpha, beta at sigma=0, gamma, c3, c2).
NOTES_TABLE = {
    "sigmoid": (-1.5, 0.650993, -1.0, 0.022769, 0.062396),
    "relu": (-3.293594, 2.255815, -1.595769, 0.372092, 0.363380),
    torch.tanh: (0.0, -0.699858, 0.0, 0.233457, 0.363595),
}


@pytest.mark.parametrize("activation", list(NOTES_TABLE), ids=["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("sigma", [0.1, 0.5])
def test_cqt_matches_notes_table(activation, sigma):
    alpha, beta0, gamma, c3, c2 = NOTES_TABLE[activation]
    got = cqt_coefficients(activation, sigma)
    expected = (alpha, beta0 - 3 * sigma**2, gamma, c3, c2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_cqt_relu_exact_and_cached():
    alpha, beta, gamma, c3, c2 = cqt_coefficients("relu", 0.0)
    assert alpha == pytest.approx(-3 * math.sqrt(math.pi / 2) / (math.pi - 2), abs=1e-12)
    assert beta == pytest.approx(-3 + 6 / (math.pi - 2), abs=1e-12)
    assert gamma == pytest.approx(-2 * math.sqrt(2 / math.pi), abs=1e-12)
    assert c2 == pytest.approx(1 - 2 / math.pi, abs=1e-12)
    assert cqt_coefficients("relu", 0.3) is cqt_coefficients("relu", 0.3)


def test_cqt_rejects_invalid_activation():
    with pytest.raises(ValueError, match="valid"):
        cqt_coefficients(torch.cos, 0.1)  # even function: E[g'(Z)] = 0


# --------------------------------------------------------------------------------- moments


def test_whitened_third_moment_matches_dense_and_ignores_chunks():
    gen = torch.Generator().manual_seed(3)
    n, d, k = 300, 5, 3
    X = torch.randn(n, d, dtype=torch.float64, generator=gen)
    y = torch.randn(n, dtype=torch.float64, generator=gen) + X[:, 0] - 0.5 * X[:, 1] ** 2
    coeffs = cqt_coefficients("relu", 0.2)
    ref = whitened_moments(X, y, k, coeffs, chunk_size=n)

    # Dense d^3 reference: T3 = mean P3(y) [x^{(x)3} - sum_j sym(x (x) e_j (x) e_j)].
    eye = torch.eye(d, dtype=torch.float64)
    S3 = torch.einsum("na,nb,nc->nabc", X, X, X)
    S3 = S3 - (torch.einsum("na,bc->nabc", X, eye) + torch.einsum("nb,ac->nabc", X, eye)
               + torch.einsum("nc,ab->nabc", X, eye))
    T3 = torch.einsum("n,nabc->abc", coeffs.p3(y), S3) / n
    Wt = ref.whitener
    T3w = torch.einsum("abc,ai,bj,ck->ijk", T3, Wt, Wt, Wt)
    T2 = torch.einsum("n,nab->ab", coeffs.p2(y), torch.einsum("na,nb->nab", X, X) - eye) / n

    scale = float(T3w.abs().max())
    assert float((ref.T3 - T3w).abs().max()) <= 1e-10 * scale
    assert float((ref.T2 - T2).abs().max()) <= 1e-10 * float(T2.abs().max())
    sign = 1.0 if coeffs.c2 > 0 else -1.0
    torch.testing.assert_close(Wt.T @ (sign * ref.T2) @ Wt, torch.eye(k, dtype=torch.float64))
    for chunk in (1, 7, 64, 10_000):
        other = whitened_moments(X, y, k, coeffs, chunk_size=chunk)
        assert float((other.T3 - ref.T3).abs().max()) <= 1e-10 * scale
        assert float((other.whitener - ref.whitener).abs().max()) <= 1e-10


def test_mixture_score_satisfies_stein_identity():
    # E[f(x) S_m(x)] = E[grad^m f(x)] for the input density; f = (b.x)^3 and (b.x)^2. Monte Carlo
    # error is ~3% here; the Gaussian score on these inputs is off by ~170% (T3) and ~90% (T2).
    gen = torch.Generator().manual_seed(0)
    d, n = 3, 400_000
    means = np.array([[1.0, 0, 0], [0, -1, 0]])
    density = GaussianMixtureDensity(np.array([0.3, 0.7]), means)
    comp = (torch.rand(n, generator=gen, dtype=torch.float64) >= 0.3).long()
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) + torch.as_tensor(means)[comp]
    b = torch.tensor([0.6, -0.3, 0.5], dtype=torch.float64)
    score = score_for(density)
    assert isinstance(score, MixtureScore)
    T3 = score.third_whitened(X, (X @ b) ** 3, torch.eye(d, dtype=torch.float64)) / n
    expected3 = 6 * torch.einsum("a,b,c->abc", b, b, b)
    assert float((T3 - expected3).norm() / expected3.norm()) < 0.15
    T2 = score.second(X, (X @ b) ** 2) / n
    expected2 = 2 * torch.outer(b, b)
    assert float((T2 - expected2).norm() / expected2.norm()) < 0.05
    # One standard component is exactly the Gaussian score.
    standard = MixtureScore(GaussianMixtureDensity.standard(d))
    whitener = torch.randn(d, 2, generator=gen, dtype=torch.float64)
    w = X[:1000, 0]
    torch.testing.assert_close(standard.third_whitened(X[:1000], w, whitener),
                               GAUSSIAN_SCORE.third_whitened(X[:1000], w, whitener))
    torch.testing.assert_close(standard.second(X[:1000], w), GAUSSIAN_SCORE.second(X[:1000], w))
    assert score_for(None) is GAUSSIAN_SCORE


# -------------------------------------------------------------------------- decompositions


@pytest.mark.parametrize("p", [4, 6])
@pytest.mark.parametrize("method", ["tpm", "orth-als"])
def test_decompositions_recover_orthogonal_tensor(method, p):
    k = 4
    gen = torch.Generator().manual_seed(11)
    V = random_orthogonal(p, gen)[:, :k]
    lam = torch.tensor([3.0, 2.2, 1.5, 0.7], dtype=torch.float64)
    T = torch.einsum("i,ai,bi,ci->abc", lam, V, V, V)
    run_gen = torch.Generator().manual_seed(5)
    if method == "tpm":
        got_lam, got_V = tensor_power_method(T, k, n_restarts=10, n_iter=200, generator=run_gen)
    else:
        got_lam, got_V = orth_als(T, k, n_iter=500, generator=run_gen)
    order = torch.argsort(got_lam, descending=True)
    torch.testing.assert_close(got_lam[order], lam, rtol=0, atol=1e-8)
    torch.testing.assert_close(got_V[:, order], V, rtol=0, atol=1e-8)


# ------------------------------------------------------------------- recovery and gate EM


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_spectral_stage_recovers_regressors_and_mixing_weights(activation):
    model, truth, X, y, _ = make_problem(200_000, 8, 3, activation=activation)
    coeffs = cqt_coefficients(activation, 0.1)
    est = estimate_regressors(X, y, 3, coeffs, torch.Generator().manual_seed(0))
    assert torch.allclose(est.A.norm(dim=1), torch.ones(3, dtype=torch.float64))
    cos = est.A @ truth["A"].T  # signed: the sign of a_i is identified
    value, perm = bottleneck_assignment(cos.numpy())
    assert value >= 0.98
    if activation == "linear":
        pi_true = torch.softmax(X @ truth["W"].T, dim=1).mean(dim=0)
        torch.testing.assert_close(est.pi[perm], pi_true, rtol=0, atol=0.03)


@pytest.mark.parametrize("decomposition", ["tpm", "orth-als"])
def test_recovers_regressors_and_gate_k3(decomposition):
    model, truth, X, y, init = make_problem(100_000, 10, 3, gating="orthogonal")
    final, log = run(model, X, y, init, 50, decomposition=decomposition)
    regressor_fit, gating_fit = fits(model, final, truth, X, y)
    assert regressor_fit >= 0.99
    assert gating_fit >= 0.95
    # The tensor estimate is already in place at iteration 0 (before any EM step).
    assert fits(model, log[0][1], truth, X, y)[0] == pytest.approx(regressor_fit)


def test_gaussian_mixture_inputs_use_their_score():
    data = SyntheticMoE(SyntheticMoE.Params(n=20_000, n_test=10, d=8, k=2, sigma=0.1,
                                            gating="generic", inputs="gmm", p=0.3)).load(0)
    model = RegressionMoE(RegressionMoE.Params.model_validate(data.model.params), n_features=8)
    truth = model.as_tensors(data.truth)
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    init = model.init_params(InitSpec(), torch.Generator().manual_seed(1))
    problem = Problem(model, X, y, torch.Generator().manual_seed(0), data.input_density)
    final = TensorEM().fit(problem, init, lambda it: it.iteration < 50)
    regressor_fit, gating_fit = fits(model, final, truth, X, y)
    assert regressor_fit >= 0.97
    assert gating_fit >= 0.95
    with pytest.raises(UnsupportedProblem, match="Gaussian mixture"):
        TensorEM(TensorEM.Params(gate_init="moments")).fit(problem, init, lambda it: True)


def test_gate_em_is_monotone_with_experts_fixed():
    model, _, X, y, init = make_problem(5000, 6, 3, sigma=0.3, gating="generic")
    _, log = run(model, X, y, init, 40, tol=0)
    assert len(log) == 41
    objectives = [entry[2] for entry in log]
    assert all(math.isfinite(o) for o in objectives)
    for before, after in itertools.pairwise(objectives):
        assert after <= before + 1e-10 * abs(before)
    assert objectives[-1] < objectives[0]
    A0 = log[0][1]["A"]
    assert all(torch.equal(entry[1]["A"], A0) for entry in log)
    assert all(torch.equal(entry[1]["log_sigma"], init["log_sigma"]) for entry in log)


def test_gate_radius_keeps_the_gate_in_the_ball():
    model, _, X, y, init = make_problem(3000, 6, 3, sigma=0.2)
    final, log = run(model, X, y, init, 15, tol=0, gate_radius=0.4, gate_ridge=0)
    objectives = [entry[2] for entry in log]
    for before, after in itertools.pairwise(objectives):
        assert after <= before + 1e-10 * abs(before)
    for entry in log:
        assert float(entry[1]["W"].norm(dim=1).max()) <= 0.4 + 1e-12
    with pytest.raises(pydantic.ValidationError, match="gate_radius"):
        TensorEM.Params(gate_ridge=0)


def test_refine_continues_with_joint_em():
    model, _, X, y, init = make_problem(3000, 6, 3, sigma=0.3, seed=2, gating="generic")
    plain, plain_log = run(model, X, y, init, 300)
    refined, log = run(model, X, y, init, 300, refine=True)
    iterations = [entry[0] for entry in log]
    assert iterations == list(range(len(log)))
    joint = [entry[3].get("joint", 0.0) for entry in log[1:]]
    switch = joint.index(1.0) + 1  # first joint-EM iteration
    assert switch == len(plain_log)  # gate EM ran exactly as without refine, then joint EM
    assert not torch.equal(refined["A"], plain["A"])
    objectives = [entry[2] for entry in log]
    for before, after in itertools.pairwise(objectives):
        assert after <= before + 1e-10 * abs(before)
    assert objectives[-1] <= plain_log[-1][2]
    assert float(model.nll(refined, X, y)) <= float(model.nll(plain, X, y))


def test_moment_gate_init_for_two_experts():
    model, truth, X, y, init = make_problem(50_000, 10, 2, gating="orthogonal")
    _, log = run(model, X, y, init, 0, gate_init="moments")
    w, w_true = log[0][1]["W"][0], truth["W"][0]
    cosine = float(w @ w_true / (w.norm() * w_true.norm()))
    assert cosine > 0.9
    assert float(w.norm()) == pytest.approx(float(w_true.norm()), rel=0.3)


def test_unsupported_problems():
    algorithm = TensorEM()
    for params, match in [
        ({"k": 5}, "k <= d"),
    ]:
        model = RegressionMoE(RegressionMoE.Params(**params), n_features=4)
        assert match in algorithm.unsupported_reason(model)
    model = RegressionMoE(RegressionMoE.Params(k=3), n_features=6)
    reason = TensorEM(TensorEM.Params(gate_init="moments")).unsupported_reason(model)
    assert "k = 2" in reason
    X, y = torch.zeros(10, 6, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    init = model.init_params(InitSpec(), torch.Generator().manual_seed(0))
    with pytest.raises(UnsupportedProblem, match="k = 2"):
        TensorEM(TensorEM.Params(gate_init="moments")).fit(
            Problem(model, X, y, torch.Generator()), init, lambda it: True
        )


def test_intercept_and_estimated_noise_with_refine():
    """Real-data configuration: intercepts and a shared noise level; refine fits them."""
    model, truth, X, y, init = make_problem(20_000, 6, 2, gating="orthogonal")
    y = y + 0.7  # a common offset only the intercepts can absorb
    fitted = RegressionMoE(RegressionMoE.Params(k=2, intercept=True, noise="shared", sigma=0.5),
                           n_features=6)
    assert TensorEM().unsupported_reason(fitted) is None
    start = fitted.init_params(InitSpec(), torch.Generator().manual_seed(3))
    final, log = run(fitted, X, y, start, 200, refine=True)
    A0 = log[0][1]["A"]
    assert A0.shape == (2, 7) and torch.equal(A0[:, -1], torch.zeros(2, dtype=A0.dtype))
    nlls = [objective for _, _, objective, _ in log]
    assert nlls[-1] < nlls[0]
    assert torch.allclose(final["A"][:, -1], torch.full((2,), 0.7, dtype=A0.dtype), atol=0.05)
    assert float(torch.exp(final["log_sigma"][0])) == pytest.approx(0.1, rel=0.2)


@pytest.mark.parametrize(
    "params",
    [{}, {"decomposition": "orth-als", "gate_init": "moments", "refine": True}],
    ids=["default", "orth-als-moments-refine"],
)
def test_conformance(params):
    assert check_algorithm("tensor-em", params)


# ------------------------------------------------------------------------------------ metrics


def test_bottleneck_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 5):
        for _ in range(20):
            C = rng.random((k, k))
            best = max(min(C[p[i], i] for i in range(k)) for p in itertools.permutations(range(k)))
            value, perm = bottleneck_assignment(C)
            assert value == pytest.approx(best)
            assert min(C[perm[i], i] for i in range(k)) == pytest.approx(best)


def test_fit_metrics_are_permutation_scale_and_sign_invariant():
    model, truth, X, y, _ = make_problem(50, 7, 3)
    perm = torch.tensor([2, 0, 1])
    W = truth["W"][perm] * 2.5
    params = {"A": -3.0 * truth["A"][perm], "W": W - W[-1], "log_sigma": truth["log_sigma"]}
    assert fits(model, params, truth, X, y) == pytest.approx((1.0, 1.0))
    # k = 2: gating fit is |cos(w, w*)| (eq. 12), whichever way the experts are matched.
    model2, truth2, X2, y2, _ = make_problem(50, 5, 2)
    w = truth2["W"][0] + 0.7 * torch.ones(5, dtype=torch.float64)
    for A in (truth2["A"], truth2["A"].flip(0)):
        params = {"A": A, "W": torch.stack([w, torch.zeros(5, dtype=torch.float64)]),
                  "log_sigma": truth2["log_sigma"]}
        expected = abs(float(w @ truth2["W"][0] / (w.norm() * truth2["W"][0].norm())))
        assert fits(model2, params, truth2, X2, y2)[1] == pytest.approx(expected)
        assert fits(model2, params, truth2, X2, y2)[0] == pytest.approx(1.0)
