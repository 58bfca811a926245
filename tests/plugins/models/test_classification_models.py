"""Classification families (logistic-moe, deep-moe), their synthetic data and metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import moebench_plugins.models.classification as classification
from moebench import EvalContext, InitSpec, Problem, plugins
from moebench.em import GateOptions
from moebench.errors import UnsupportedProblem
from moebench.testing import check_algorithm
from moebench_plugins.algorithms.gd import GradientDescent
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.datasets.synthetic_classification import SyntheticLogisticMoE
from moebench_plugins.metrics.classification import TestAccuracy, TestCrossEntropy, TrainAccuracy
from moebench_plugins.models.classification import LogisticMoE, mirror_targets
from moebench_plugins.models.deep import DeepMoE
from moebench_plugins.models.regression import InitError

SMALL = {"n": 300, "n_test": 100, "d": 3, "k": 2, "n_classes": 3}


def logistic(k=2, d=4, C=3, **kw) -> LogisticMoE:
    return LogisticMoE(LogisticMoE.Params(k=k, **kw), n_features=d, n_classes=C)


def deep(k=3, d=4, C=3, hidden=5, **kw) -> DeepMoE:
    return DeepMoE(DeepMoE.Params(k=k, hidden=hidden, **kw), n_features=d, n_classes=C)


def random_params(model, seed=0, scheme="random", scale=1.5):
    gen = torch.Generator().manual_seed(seed)
    return model.init_params(InitSpec(scheme=scheme, scale=scale), gen)


def random_data(n, d, C, seed=1, float_labels=True):
    rng = np.random.default_rng(seed)
    y = torch.as_tensor(rng.integers(0, C, n))
    return torch.as_tensor(rng.standard_normal((n, d))), (y.double() if float_labels else y)


def softmax_np(t):
    e = np.exp(t - t.max())
    return e / e.sum()


def naive_joint(model, params, X, y):
    """``p(y_n, z_n = i | x_n)`` by the textbook formula, in numpy loops."""
    P = {k: v.numpy() for k, v in params.items()}
    X, y = X.numpy(), y.numpy().astype(int)
    out = np.zeros((X.shape[0], model.n_experts))
    for n in range(X.shape[0]):
        x = X[n]
        if isinstance(model, LogisticMoE):
            x = np.append(x, 1.0) if model.params.intercept else x
            gate = softmax_np(P["W"] @ x)
            experts = [softmax_np(P["B"][i] @ x) for i in range(model.n_experts)]
        else:
            hg = np.maximum(P["Ug"] @ x + P["bg"], 0)
            gate = softmax_np(P["Vg"] @ hg + P["cg"])
            experts = []
            for i in range(model.n_experts):
                h = np.maximum(P["U"][i] @ x + P["b"][i], 0)
                experts.append(softmax_np(P["V"][i] @ h + P["c"][i]))
        for i in range(model.n_experts):
            out[n, i] = gate[i] * experts[i][y[n]]
    return out


def run(algorithm, model, X, y, init, max_iter):
    objectives, params = [], []

    def callback(it):
        objectives.append(it.objective)
        params.append({k: v.clone() for k, v in it.params.items()})
        return it.iteration < max_iter

    problem = Problem(model, X, y, torch.Generator().manual_seed(0))
    final = algorithm.fit(problem, {k: v.clone() for k, v in init.items()}, callback)
    return final, objectives, params


def assert_monotone(objectives, rel=1e-10):
    for before, after in itertools.pairwise(objectives):
        assert after <= before + rel * abs(before), (before, after)


# ---------------------------------------------------------------------------- densities


@pytest.mark.parametrize(
    "model",
    [logistic(intercept=False), logistic(k=3, intercept=True), deep()],
    ids=["logistic", "logistic-intercept", "deep"],
)
def test_log_likelihood_matches_naive_formula(model):
    params = random_params(model)
    if isinstance(model, DeepMoE):  # non-zero biases, so that they are tested too
        params = {k: v + 0.3 * torch.randn(v.shape, dtype=v.dtype) for k, v in params.items()}
    X, y = random_data(9, 4, 3)
    expected = naive_joint(model, params, X, y)
    ll = model.log_likelihood(params, X, y)
    np.testing.assert_allclose(ll.numpy(), np.log(expected.sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(model.joint_log_probs(params, X, y).numpy(), np.log(expected),
                               rtol=1e-12)
    # integer labels give the same answer as float labels
    np.testing.assert_array_equal(model.log_likelihood(params, X, y.long()).numpy(), ll.numpy())


@pytest.mark.parametrize("model", [logistic(k=3), deep()], ids=["logistic", "deep"])
def test_posterior_and_predictions_are_distributions(model):
    params = random_params(model, scale=3.0)
    X, y = random_data(50, 4, 3)
    R = model.posterior(params, X, y)
    assert R.shape == (50, model.n_experts)
    torch.testing.assert_close(R.sum(dim=1), torch.ones(50, dtype=torch.float64))
    P = model.predict(params, X)
    assert P.shape == (50, 3)
    torch.testing.assert_close(P.sum(dim=1), torch.ones(50, dtype=torch.float64))
    # p(y | x) from predict agrees with the likelihood
    ll = model.log_likelihood(params, X, y)
    torch.testing.assert_close(torch.log(P[torch.arange(50), y.long()]), ll)


def test_log_likelihood_finite_for_extreme_parameters():
    model = logistic()
    params = {k: 1e3 * v for k, v in random_params(model).items()}
    X, y = random_data(20, 4, 3)
    assert torch.isfinite(model.log_likelihood(params, X, y)).all()
    assert torch.isfinite(model.posterior(params, X, y)).all()


@pytest.mark.parametrize(
    "model",
    [logistic(k=2, d=3, intercept=True), deep(k=2, d=3, hidden=4)],
    ids=["logistic", "deep"],
)
def test_nll_gradients_match_finite_differences(model):
    params = random_params(model, seed=3)
    X, y = random_data(6, 3, 3, seed=4)
    names = list(params)

    def f(*tensors):
        return model.nll(dict(zip(names, tensors, strict=True)), X, y)

    inputs = tuple(params[n].clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- init and error


def test_init_schemes():
    model = logistic(k=3, d=5, C=4)
    p = random_params(model, scheme="unit-rows", scale=2.0)
    assert p["B"].shape == (3, 4, 5) and p["W"].shape == (3, 5)
    torch.testing.assert_close(p["B"].norm(dim=2), torch.full((3, 4), 2.0, dtype=torch.float64))
    torch.testing.assert_close(p["W"][:-1].norm(dim=1), torch.full((2,), 2.0, dtype=torch.float64))
    assert (p["W"][-1] == 0).all()
    with pytest.raises(InitError):
        model.init_params(InitSpec(scheme="near-truth"), torch.Generator())
    dm = deep(k=2, d=6, C=3, hidden=7)
    q = random_params(dm, scheme="unit-rows", scale=1.0)
    assert {n: tuple(v.shape) for n, v in q.items()} == dm.shapes()
    for name in ("U", "V", "Ug", "Vg"):
        torch.testing.assert_close(q[name].norm(dim=-1), torch.ones_like(q[name][..., 0]))
    for name in ("b", "c", "bg", "cg"):
        assert (q[name] == 0).all()
    near = dm.init_params(InitSpec(scheme="near-truth", radius=0.1), torch.Generator(), q)
    assert all(float((near[n] - q[n]).norm()) == pytest.approx(0.1) for n in q)


def test_needs_classes():
    with pytest.raises(UnsupportedProblem):
        LogisticMoE(n_features=3)
    with pytest.raises(UnsupportedProblem):
        DeepMoE(n_features=3, n_classes=1)


def test_parameter_error_is_invariant_to_symmetries():
    model = logistic(k=3, d=4, C=3)
    truth = random_params(model, seed=5)
    assert model.parameter_error(truth, truth) == pytest.approx(0.0, abs=1e-12)
    perm = torch.tensor([2, 0, 1])
    shifted = {
        # permute experts, shift each expert's class rows and the gate rows by common vectors
        "B": truth["B"][perm] + torch.randn(3, 1, 4, dtype=torch.float64),
        "W": truth["W"][perm] + torch.randn(1, 4, dtype=torch.float64),
    }
    assert model.parameter_error(shifted, truth) == pytest.approx(0.0, abs=1e-12)
    moved = {"B": truth["B"].clone(), "W": truth["W"].clone()}
    moved["B"][0, 0, 0] += 0.5
    assert model.parameter_error(moved, truth) == pytest.approx(0.5)

    dm = deep(k=3)
    t = random_params(dm, seed=6)
    assert dm.parameter_error(t, t) == pytest.approx(0.0, abs=1e-12)
    p = {n: t[n][perm] if n in ("U", "b", "V", "c", "Vg", "cg") else t[n] for n in t}
    p["c"] = p["c"] + 1.0
    p["cg"] = p["cg"] + 2.0
    assert dm.parameter_error(p, t) == pytest.approx(0.0, abs=1e-12)
    p["Ug"] = p["Ug"] + 0.1 / math.sqrt(p["Ug"].numel())
    assert dm.parameter_error(p, t) == pytest.approx(0.1)
    # truth of another family (synthetic-logistic-moe's) or another k: NaN, not an exception
    assert math.isnan(dm.parameter_error(t, truth))
    assert math.isnan(model.parameter_error(truth, random_params(logistic(k=2, d=4, C=3))))


# ---------------------------------------------------------------------------- EM


def synthetic_problem(n=3000, d=5, C=3, radius=1.0, seed=0):
    data = SyntheticLogisticMoE(
        SyntheticLogisticMoE.Params(n=n, n_test=500, d=d, k=2, n_classes=C)
    ).load(seed)
    model = LogisticMoE(LogisticMoE.Params.model_validate(data.model.params),
                        n_features=data.n_features, n_classes=data.meta["n_classes"])
    truth = model.as_tensors(data.truth)
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train, dtype=torch.float64)
    init = model.init_params(InitSpec(scheme="near-truth", radius=radius),
                             torch.Generator().manual_seed(1), truth)
    return data, model, truth, X, y, init


def test_synthetic_dataset():
    ds = SyntheticLogisticMoE(SyntheticLogisticMoE.Params(**SMALL))
    a, b = ds.load(3), ds.load(3)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert a.task == "classification" and a.model.name == "logistic-moe"
    assert a.meta["n_classes"] == 3 and a.X_train.shape == (300, 3) and a.y_test.shape == (100,)
    assert set(np.unique(a.y_train)) <= {0, 1, 2}
    assert a.truth["B"].shape == (2, 3, 3) and (a.truth["W"][-1] == 0).all()
    assert not np.array_equal(ds.load(4).y_train, a.y_train)
    assert plugins.get("datasets", "synthetic-logistic-moe") is SyntheticLogisticMoE


def test_joint_em_is_monotone_and_approaches_the_truth():
    _, model, truth, X, y, init = synthetic_problem()
    final, objectives, params = run(JointEM(JointEM.Params(tol=0)), model, X, y, init, 15)
    assert len(objectives) == 16 and all(math.isfinite(o) for o in objectives)
    assert_monotone(objectives)
    errors = [model.parameter_error(p, truth) for p in params]
    assert errors[0] > 2.0
    assert errors[-1] < 0.6 * errors[0]
    # EM heads for the MLE, whose own error (about 1 at n = 3000) bounds the decrease
    assert errors[1] < errors[0]
    assert (final["W"][-1] == 0).all()
    # the M-step is EM's: Q does not decrease
    R = model.posterior(params[-2], X, y)
    assert model.q_value(final, X, y, R) >= model.q_value(params[-2], X, y, R)


def test_mirror_targets_reduce_to_em_at_eta_one():
    _, model, _, X, y, init = synthetic_problem(n=200)
    R = model.posterior(init, X, y)
    G, T = model.m_step_targets(X, y, R, init, 1.0)
    assert G is R
    onehot = torch.nn.functional.one_hot(y.long(), 3).double()
    assert torch.equal(T, R[:, :, None] * onehot[:, None, :])
    assert model.m_step_objective(init, X, G, T) == pytest.approx(
        float(model.q_value(init, X, y, R)), rel=1e-14
    )
    # eta < 1: targets are still distributions over (z, y)
    G, T = model.m_step_targets(X, y, R, init, 0.3)
    torch.testing.assert_close(G.sum(dim=1), torch.ones(200, dtype=torch.float64))
    torch.testing.assert_close(T.sum(dim=2), G)
    with pytest.raises(ValueError):
        mirror_targets(R, y, 3, 0.5)


@pytest.mark.parametrize("eta", [0.5, 0.05])
def test_mirror_steps_are_monotone(eta):
    _, model, _, X, y, init = synthetic_problem(n=1000)
    params, nlls = init, [float(model.nll(init, X, y))]
    gate = GateOptions()
    for _ in range(5):
        R = model.posterior(params, X, y)
        G, T = model.m_step_targets(X, y, R, params, eta)
        with torch.no_grad():
            new, _ = model.m_step(X, y, R, params, gate, eta=eta)
        assert model.m_step_objective(new, X, G, T) >= model.m_step_objective(params, X, G, T)
        params = new
        nlls.append(float(model.nll(params, X, y)))
    assert_monotone(nlls)
    assert nlls[-1] < nlls[0]
    _, em = run(JointEM(JointEM.Params(tol=0)), model, X, y, init, 5)[:2]
    if eta < 0.1:  # a small step moves less than EM
        assert nlls[1] > em[1]


def test_complete_data_kl_and_mirror_objective():
    _, model, _, X, y, init = synthetic_problem(n=500)
    R = model.posterior(init, X, y)
    eta = 0.5
    with torch.no_grad():
        new, _ = model.m_step(X, y, R, init, GateOptions(), eta=eta)
    assert torch.equal(model.complete_data_kl(init, init, X), torch.zeros(500, dtype=torch.float64))
    kl = model.complete_data_kl(init, new, X)
    assert (kl >= -1e-14).all() and float(kl.mean()) > 0
    # mirror-em's md_objective is exactly minus the increase of the mirror M-step objective
    G, T = model.m_step_targets(X, y, R, init, eta)
    gain = model.m_step_objective(new, X, G, T) - model.m_step_objective(init, X, G, T)
    dq = model.q_value(new, X, y, R) - model.q_value(init, X, y, R)
    md = -eta * dq + (1 - eta) * kl.mean()
    assert float(md) == pytest.approx(-float(gain), rel=1e-9, abs=1e-14)
    dm = deep(d=5)
    p = random_params(dm)
    q = random_params(dm, seed=9)
    assert (dm.complete_data_kl(p, q, X) >= -1e-14).all()


@pytest.mark.skipif("mirror-em" not in plugins.components("algorithms"),
                    reason="mirror-em is not installed")
def test_mirror_em_conformance_on_logistic_moe():
    assert check_algorithm("mirror-em", {"eta": 0.5}, dataset=("synthetic-logistic-moe", SMALL))


def test_lbfgs_expert_step_agrees_with_newton():
    _, newton, _, X, y, init = synthetic_problem(n=1000)
    lbfgs = LogisticMoE(LogisticMoE.Params(k=2, newton_max_dim=1, inner_steps=100),
                        n_features=5, n_classes=3)
    R = newton.posterior(init, X, y)
    with torch.no_grad():
        a, ea = newton.m_step(X, y, R, init, GateOptions())
        b, eb = lbfgs.m_step(X, y, R, init, GateOptions())
    assert ea["expert_lbfgs"] == 0 and eb["expert_lbfgs"] == 1
    assert eb["experts_rejected"] == 0
    torch.testing.assert_close(a["B"], b["B"], atol=1e-5, rtol=1e-5)
    assert torch.equal(a["W"], b["W"])


def test_fashion_mnist_sized_em_step_uses_lbfgs(monkeypatch):
    def no_newton(*args, **kwargs):
        raise AssertionError("the expert Newton system ((C-1) d)^2 must not be built")

    monkeypatch.setattr(classification, "_fit_expert_newton", no_newton)
    model = logistic(k=2, d=784, C=10, inner_steps=5)
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.random((2000, 784)))
    y = torch.as_tensor(rng.integers(0, 10, 2000), dtype=torch.float64)
    init = random_params(model, scheme="unit-rows", scale=1.0)
    final, objectives, _ = run(JointEM(JointEM.Params(tol=0)), model, X, y, init, 1)
    assert len(objectives) == 2 and all(math.isfinite(o) for o in objectives)
    assert objectives[1] < objectives[0]
    assert all(torch.isfinite(v).all() for v in final.values())


# ---------------------------------------------------------------------------- deep MoE


def test_deep_moe_joint_em_and_gd():
    data = SyntheticLogisticMoE(
        SyntheticLogisticMoE.Params(n=400, n_test=100, d=8, k=2, n_classes=4)
    ).load(2)
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train, dtype=torch.float64)
    model = DeepMoE(DeepMoE.Params(k=3, hidden=16, inner_lr=1e-2), n_features=8, n_classes=4)
    init = random_params(model, scheme="unit-rows", scale=1.0)
    final, objectives, _ = run(JointEM(JointEM.Params(tol=0)), model, X, y, init, 10)
    assert len(objectives) == 11
    assert_monotone(objectives)
    assert objectives[-1] < objectives[0] - 0.01
    assert {n: tuple(v.shape) for n, v in final.items()} == model.shapes()

    # mirror step with the same machinery
    R = model.posterior(init, X, y)
    G, T = model.m_step_targets(X, y, R, init, 0.5)
    with torch.no_grad():
        new, extras = model.m_step(X, y, R, init, GateOptions(), eta=0.5)
    assert extras["m_step_gain"] >= 0
    assert model.m_step_objective(new, X, G, T) >= model.m_step_objective(init, X, G, T)

    final, objectives, _ = run(GradientDescent(GradientDescent.Params(optimizer="adam", lr=0.01)),
                               model, X, y, init, 10)
    assert all(math.isfinite(o) for o in objectives) and objectives[-1] < objectives[0]


# ---------------------------------------------------------------------------- metrics, plugins


def test_classification_metrics():
    _, model, truth, _, _, _ = synthetic_problem(n=200)
    data = SyntheticLogisticMoE(SyntheticLogisticMoE.Params(n=200, n_test=500, d=5, k=2,
                                                            n_classes=3)).load(0)
    t = {s: torch.as_tensor(getattr(data, s)) for s in ("X_train", "y_train", "X_test", "y_test")}
    ctx = EvalContext(model, truth, t["X_train"], t["y_train"], t["X_test"], t["y_test"], truth)
    acc = TestAccuracy()(ctx)
    assert 0.5 < acc <= 1.0
    # the Bayes classifier of the truth on the training split, computed here from the densities
    joint = model.gate_log_probs(truth, t["X_train"])[:, :, None] \
        + model.expert_log_probs(truth, t["X_train"])
    bayes = torch.logsumexp(joint, dim=1).argmax(dim=1) == t["y_train"].long()
    assert TrainAccuracy()(ctx) == float(bayes.to(torch.float64).mean()) > 0.5
    ce = TestCrossEntropy()(ctx)
    assert ce == pytest.approx(float(model.nll(truth, t["X_test"], t["y_test"])))
    reg = plugins.get("models", "regression-moe")(n_features=5)
    assert math.isnan(TestAccuracy()(EvalContext(reg, {}, *t.values(), None)))
    assert plugins.get("metrics", "test_cross_entropy").direction == "min"
    assert plugins.get("metrics", "train_accuracy").direction == "max"
    assert plugins.get("models", "logistic-moe") is LogisticMoE
    assert plugins.get("models", "deep-moe") is DeepMoE


@pytest.mark.parametrize("algorithm", ["joint-em", "gd"])
def test_conformance_on_logistic_moe(algorithm):
    passed = check_algorithm(algorithm, dataset=("synthetic-logistic-moe", SMALL))
    assert passed


def test_intercept_features_are_reused_but_never_stale():
    X = torch.randn(50, 3, dtype=torch.float64)
    F = classification.with_intercept(X)
    assert classification.with_intercept(X) is F  # the copy is made once per input tensor
    torch.testing.assert_close(F, torch.cat([X, torch.ones(50, 1, dtype=X.dtype)], dim=1))
    X[0, 0] = 123.0  # in-place change of the input: rebuilt
    assert float(classification.with_intercept(X)[0, 0]) == 123.0
    G = classification.with_intercept(X)
    G[1, 1] = -7.0  # in-place change of the copy by a caller: rebuilt, not returned again
    assert float(classification.with_intercept(X)[1, 1]) == float(X[1, 1])
