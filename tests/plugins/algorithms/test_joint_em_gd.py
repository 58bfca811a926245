"""Joint EM, the gate M-step, gradient descent, the synthetic generator and the core metrics."""

from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest
import torch

import moebench_plugins.metrics.core as core_metrics
from moebench import EvalContext, InitSpec, Problem
from moebench_plugins.algorithms.gd import GradientDescent
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.datasets.synthetic import SyntheticMoE
from moebench_plugins.models.gate import fit_softmax_gate, gate_objective
from moebench_plugins.models.regression import RegressionMoE


def setup_problem(seed=0, init_seed=1, radius=0.3, **dataset):
    params = {"n": 5000, "n_test": 500, "d": 5, "k": 2, "sigma": 0.1, **dataset}
    data = SyntheticMoE(SyntheticMoE.Params(**params)).load(seed)
    model = RegressionMoE(
        RegressionMoE.Params.model_validate(data.model.params), n_features=data.n_features
    )
    truth = model.as_tensors(data.truth)
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    gen = torch.Generator().manual_seed(init_seed)
    init = model.init_params(InitSpec(scheme="near-truth", radius=radius), gen, truth)
    return data, model, truth, X, y, init


def run(algorithm, model, X, y, init, max_iter, seed=0):
    """Drive ``algorithm`` for ``max_iter`` iterations; return final params, objectives, extras."""
    objectives, extras = [], []

    def callback(it):
        objectives.append(it.objective)
        extras.append(dict(it.extras))
        return it.iteration < max_iter

    problem = Problem(model, X, y, torch.Generator().manual_seed(seed))
    final = algorithm.fit(problem, {k: v.clone() for k, v in init.items()}, callback)
    return final, objectives, extras


def assert_monotone(objectives, rel=1e-10):
    for before, after in zip(objectives, objectives[1:], strict=False):
        assert after <= before + rel * abs(before), (before, after)


def test_joint_em_is_monotone_and_recovers_the_truth():
    _, model, truth, X, y, init = setup_problem()
    final, objectives, extras = run(JointEM(JointEM.Params(tol=0)), model, X, y, init, 30)
    assert len(objectives) == 31
    assert all(math.isfinite(o) for o in objectives)
    assert_monotone(objectives)
    assert objectives[-1] < objectives[0]
    assert model.parameter_error(init, truth) > 0.5
    assert model.parameter_error(final, truth) < 0.15
    assert extras[1]["gate_newton_steps"] >= 1
    assert (final["W"][-1] == 0).all()


def test_joint_em_stops_on_tolerance():
    _, model, _, X, y, init = setup_problem(n=2000)
    _, objectives, _ = run(JointEM(JointEM.Params(tol=1e-6)), model, X, y, init, 500)
    assert len(objectives) < 500


@pytest.mark.parametrize(
    ("activation", "noise", "intercept"),
    [("sigmoid", "shared", False), ("relu", "per_expert", True), ("linear", "per_expert", False)],
)
def test_joint_em_monotone_for_other_variants(activation, noise, intercept):
    data = SyntheticMoE(
        SyntheticMoE.Params(n=1500, d=6, k=3, sigma=0.2, activation=activation)
    ).load(3)
    model = RegressionMoE(
        RegressionMoE.Params(k=3, activation=activation, noise=noise, sigma=1.0,
                             intercept=intercept),
        n_features=6,
    )
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    init = model.init_params(InitSpec(scheme="random"), torch.Generator().manual_seed(0))
    final, objectives, _ = run(JointEM(JointEM.Params(tol=0)), model, X, y, init, 15)
    assert all(math.isfinite(o) for o in objectives)
    assert_monotone(objectives)
    assert objectives[-1] < objectives[0]
    if noise == "shared":
        assert torch.allclose(final["log_sigma"], final["log_sigma"][0])


def test_gate_m_step_finite_and_improving_on_separable_labels():
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.standard_normal((400, 4)))
    V = torch.as_tensor(rng.standard_normal((3, 4)))
    labels = (X @ V.T).argmax(dim=1)  # 3 classes, linearly separable by a softmax
    R = torch.nn.functional.one_hot(labels, 3).to(torch.float64)
    W0 = torch.zeros(3, 4, dtype=torch.float64)
    W, info = fit_softmax_gate(X, R, W0, ridge=1e-6, max_steps=50)
    assert torch.isfinite(W).all()
    assert (W[-1] == 0).all()
    assert info["J"] > info["J0"] + 0.5
    assert info["J"] == pytest.approx(float(gate_objective(X, R, W, 1e-6)))
    pred = (X @ W.T).argmax(dim=1)
    assert (pred == labels).double().mean() > 0.97


def test_gate_m_step_reaches_the_optimum():
    rng = np.random.default_rng(1)
    X = torch.as_tensor(rng.standard_normal((300, 3)))
    R = torch.softmax(torch.as_tensor(rng.standard_normal((300, 3))) + X[:, :1], dim=1)
    W, info = fit_softmax_gate(X, R, torch.zeros(3, 3, dtype=torch.float64), ridge=1e-3)
    assert info["converged"]
    Wv = W.clone().requires_grad_(True)
    gate_objective(X, R, Wv, 1e-3).backward()
    assert float(Wv.grad[:-1].abs().max()) < 1e-8


def test_gd_decreases_the_nll():
    _, model, _, X, y, init = setup_problem(n=2000)
    _, objectives, _ = run(GradientDescent(GradientDescent.Params(lr=2e-3)), model, X, y, init, 40)
    assert len(objectives) == 41
    assert_monotone(objectives, rel=1e-12)
    assert objectives[-1] < objectives[0] - 0.1


def test_gd_minibatch_adam_and_reproducible():
    _, model, _, X, y, init = setup_problem(n=2000, radius=0.5)
    gd = GradientDescent(GradientDescent.Params(lr=0.01, optimizer="adam", batch_size=250))
    a, obj_a, _ = run(gd, model, X, y, init, 10, seed=5)
    b, obj_b, _ = run(gd, model, X, y, init, 10, seed=5)
    assert obj_a == obj_b
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert obj_a[-1] < obj_a[0]
    assert (a["W"][-1] == 0).all()


def test_gd_estimates_shared_noise_as_one_value():
    _, _, _, X, y, _ = setup_problem(n=1000)
    model = RegressionMoE(RegressionMoE.Params(k=2, noise="shared", sigma=0.5), n_features=5)
    init = model.init_params(InitSpec(), torch.Generator().manual_seed(0))
    final, objectives, _ = run(GradientDescent(GradientDescent.Params(lr=0.05)), model, X, y,
                               init, 10)
    assert objectives[-1] < objectives[0]
    assert final["log_sigma"][0] == final["log_sigma"][1]
    assert final["log_sigma"][0] != init["log_sigma"][0]


# ------------------------------------------------------------------------- synthetic data


def test_synthetic_regressors_and_orthogonal_gates():
    ds = SyntheticMoE(SyntheticMoE.Params(n=100, n_test=50, d=8, k=3, gate_norm=2.5))
    data = ds.load(11)
    A, W = data.truth["A"], data.truth["W"]
    np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(W[:-1], axis=1), 2.5)
    assert np.all(W[-1] == 0)
    np.testing.assert_allclose(W @ A.T, 0.0, atol=1e-12)
    assert data.X_train.shape == (100, 8) and data.X_test.shape == (50, 8)
    assert data.model.name == "regression-moe" and data.model.params["k"] == 3
    np.testing.assert_allclose(data.truth["log_sigma"], np.log(0.1))
    generic = SyntheticMoE(SyntheticMoE.Params(d=8, k=3, gating="generic")).load(11)
    assert np.abs(generic.truth["W"][:-1] @ generic.truth["A"].T).max() > 1e-3


def test_synthetic_latent_frequencies_match_gate_probabilities():
    ds = SyntheticMoE(SyntheticMoE.Params(n=20000, n_test=1, d=6, k=3, gate_norm=2.0))
    s = ds.generate(4)
    logits = s.X @ s.W.T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    m = len(s.z)
    freq = np.bincount(s.z, minlength=3) / m
    expected = probs.mean(axis=0)
    assert np.all(np.abs(freq - expected) < 4 * np.sqrt(expected * (1 - expected) / m))
    # y is the chosen expert's response plus noise of the right size
    resid = s.y - np.einsum("nd,nd->n", s.X, s.A[s.z])
    assert np.std(resid) == pytest.approx(0.1, rel=0.03)


def test_synthetic_same_seed_same_arrays():
    ds = SyntheticMoE(SyntheticMoE.Params(n=50, n_test=20, activation="relu"))
    a, b, c = ds.load(7), ds.load(7), ds.load(8)
    for name in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.X_train, c.X_train)
    for name in a.truth:
        np.testing.assert_array_equal(a.truth[name], b.truth[name])


def test_synthetic_orthogonal_needs_enough_dimensions():
    with pytest.raises(pydantic.ValidationError, match="2k - 1"):
        SyntheticMoE.Params(d=4, k=3)
    SyntheticMoE.Params(d=4, k=3, gating="generic")


# ------------------------------------------------------------------------- metrics


def test_core_metrics():
    data, model, truth, X, y, init = setup_problem(n=500)
    Xt, yt = torch.as_tensor(data.X_test), torch.as_tensor(data.y_test)
    ctx = EvalContext(model, truth, X, y, Xt, yt, truth)
    assert core_metrics.ParamError()(ctx) == 0.0
    assert core_metrics.TrainNLL()(ctx) == pytest.approx(float(model.nll(truth, X, y)))
    assert core_metrics.HeldOutNLL()(ctx) == pytest.approx(float(model.nll(truth, Xt, yt)))
    mse = float(((yt - model.predict(truth, Xt)) ** 2).mean())
    assert core_metrics.HeldOutMSE()(ctx) == pytest.approx(mse)
    assert 0 < core_metrics.TrainMSE()(ctx) < float(y.var())
    no_truth = EvalContext(model, init, X, y, Xt, yt, None)
    assert math.isnan(core_metrics.ParamError()(no_truth))


def test_linear_regression_baseline_is_least_squares():
    from moebench_plugins.algorithms.baselines import LinearRegression
    from moebench_plugins.models.regression import RegressionMoE

    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(500, 3)))
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 3.0 + 0.1 * torch.as_tensor(
        rng.normal(size=500))
    model = RegressionMoE(RegressionMoE.Params(k=3, intercept=True, noise="shared"),
                          n_features=3)
    init = model.init_params(InitSpec(), torch.Generator().manual_seed(0))
    seen = []
    params = LinearRegression().fit(Problem(model, X, y, torch.Generator()), init,
                                    lambda it: seen.append(it.iteration) or True)
    assert seen == [0, 1]
    expected = np.linalg.lstsq(np.c_[X.numpy(), np.ones(500)], y.numpy(), rcond=None)[0]
    for i in range(3):
        np.testing.assert_allclose(params["A"][i].numpy(), expected, atol=1e-10)
    assert float(torch.exp(params["log_sigma"][0])) == pytest.approx(0.1, rel=0.15)
