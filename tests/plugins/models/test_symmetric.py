"""SymMoLinE / SymMoLogE (Fruytier et al. 2025): data, model, EM = mirror descent, EM vs GD.

Both families are exponential families with natural parameter ``theta = (beta, w)``:

* SymMoLinE: ``S = (z y x / s^2, z x / 2)``, ``A = (beta.x)^2 / (2 s^2) + log 2cosh(w.x / 2)``;
* SymMoLogE: ``S = (y z x / 2, z x / 2)``, ``A = log 2cosh(beta.x / 2) + log 2cosh(w.x / 2)``.

The tests compute ``grad A`` (the dual coordinates) and ``grad L`` by autograd on these formulas
and on the model's NLL, independently of the M-step code.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

from moebench import InitSpec, Problem
from moebench.em import GateOptions
from moebench.reports.results import read_results
from moebench.runner import run_suite
from moebench.suite import parse_suite
from moebench_plugins.algorithms.gd import GradientDescent
from moebench_plugins.algorithms.gradient_em import GradientEM
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.algorithms.mirror_em import MirrorEM
from moebench_plugins.datasets.fruytier import SymMoLinEData, SymMoLogEData
from moebench_plugins.models import symmetric
from moebench_plugins.models.symmetric import SymMoLinE, SymMoLogE

FAMILIES = {"symmoline": (SymMoLinEData, SymMoLinE), "symmologe": (SymMoLogEData, SymMoLogE)}


def setup(name, seed=0, init_radius=1.0, init_seed=1, **params):
    ds_cls, model_cls = FAMILIES[name]
    data = ds_cls(ds_cls.Params(**params)).load(seed)
    model = model_cls(
        model_cls.Params.model_validate(data.model.params),
        n_features=data.n_features,
        n_classes=data.meta.get("n_classes"),
    )
    X = torch.as_tensor(data.X_train)
    y = torch.as_tensor(data.y_train, dtype=torch.float64)  # the runner passes float targets
    truth = model.as_tensors(data.truth)
    init = model.init_params(
        InitSpec(scheme="near-truth", radius=init_radius),
        torch.Generator().manual_seed(init_seed),
        truth,
    )
    return data, model, X, y, truth, init


def run(algorithm, model, X, y, init, max_iter, truth=None):
    objectives, errors, extras = [], [], []

    def callback(it):
        objectives.append(it.objective)
        extras.append(dict(it.extras))
        if truth is not None:
            errors.append(model.parameter_error(it.params, truth))
        return it.iteration < max_iter

    problem = Problem(model, X, y, torch.Generator().manual_seed(0))
    final = algorithm.fit(problem, {k: v.clone() for k, v in init.items()}, callback)
    return final, objectives, errors, extras


def assert_monotone(objectives, rel=1e-10):
    for t, (before, after) in enumerate(zip(objectives, objectives[1:], strict=False)):
        assert after <= before + rel * abs(before), (t, before, after)


def log_partition(model, params, X) -> torch.Tensor:
    """Mean complete-data log-partition ``A_bar(theta)`` from its closed form."""
    u = X @ params["w"]
    v = X @ params["beta"]
    log2cosh = lambda t: torch.logaddexp(0.5 * t, -0.5 * t)  # noqa: E731
    if isinstance(model, SymMoLinE):
        expert = v.square() / (2 * model.params.sigma**2)
    else:
        expert = log2cosh(v)
    return (expert + log2cosh(u)).mean()


def dual(model, params, X) -> torch.Tensor:
    """``grad A_bar(theta)``, flattened ``[beta, w]``."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    g = torch.autograd.grad(log_partition(model, p, X), [p["beta"], p["w"]])
    return torch.cat(g)


def grad_nll(model, params, X, y) -> torch.Tensor:
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    return torch.cat(torch.autograd.grad(model.nll(p, X, y), [p["beta"], p["w"]]))


def flat(params) -> torch.Tensor:
    return torch.cat([params["beta"], params["w"]])


# ----------------------------------------------------------------------------------- data


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_generators(name):
    ds_cls, _ = FAMILIES[name]
    ds = ds_cls(ds_cls.Params(n=300, n_test=200, d=6, r=3.0))
    a, b, c = ds.load(5), ds.load(5), ds.load(6)
    assert a.X_train.shape == (300, 6) and a.X_test.shape == (200, 6)
    for key in ("beta", "w"):
        assert np.linalg.norm(a.truth[key]) == pytest.approx(3.0)
        np.testing.assert_array_equal(a.truth[key], b.truth[key])
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.X_train, c.X_train)
    assert a.model.name == name
    assert "Fruytier" in a.meta["citation"] and "ICML 2025" in a.meta["citation"]
    if name == "symmologe":
        assert a.task == "classification" and a.meta["n_classes"] == 2
        assert set(np.unique(a.y_train)) == {0, 1}
    else:
        assert a.task == "regression" and a.model.params == {"sigma": 1.0}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_generators_sample_from_the_model(name):
    data, model, X, y, truth, _ = setup(name, n=20000, n_test=1)
    if name == "symmologe":
        p = model.predict(truth, X)[:, 1]
        assert abs(float(y.mean() - p.mean())) < 4 * math.sqrt(0.25 / len(y))
    else:
        # E[y | x] = tanh(w*.x / 2) beta*.x and Var(y | x) = (beta*.x)^2 (1 - tanh^2) + sigma^2
        res = y - model.predict(truth, X)
        assert abs(float(res.mean())) < 0.1
        m = X @ truth["beta"]
        var = m.square() * (1 - torch.tanh(0.5 * (X @ truth["w"])).square()) + 1.0
        assert float((res.square() / var).mean()) == pytest.approx(1.0, abs=0.05)
    # the truth fits better than a random point
    rand = model.init_params(InitSpec(scale=4.0), torch.Generator().manual_seed(0))
    assert float(model.nll(truth, X, y)) < float(model.nll(rand, X, y))


# ----------------------------------------------------------------------------------- model


def naive_joint(model, params, X, y) -> np.ndarray:
    """``p(y, z | x)`` for z = +1, -1 by the textbook formulas, in numpy loops."""
    beta, w = params["beta"].numpy(), params["w"].numpy()
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    out = np.zeros((X.shape[0], 2))
    for n in range(X.shape[0]):
        x, yn = X[n].numpy(), float(y[n])
        for col, z in enumerate((1, -1)):
            gate = sig(z * float(w @ x))
            if isinstance(model, SymMoLinE):
                s = model.params.sigma
                dens = math.exp(-0.5 * ((yn - z * float(beta @ x)) / s) ** 2) / (
                    math.sqrt(2 * math.pi) * s
                )
            else:
                label = 1 if yn > 0 else -1
                dens = sig(label * z * float(beta @ x))
            out[n, col] = gate * dens
    return out


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_likelihood_posterior_and_predict(name):
    _, model, X, y, truth, init = setup(name, n=50, n_test=5, d=4)
    X, y = X[:9], y[:9]
    joint = naive_joint(model, init, X, y)
    np.testing.assert_allclose(model.log_likelihood(init, X, y).numpy(),
                               np.log(joint.sum(1)), rtol=1e-12)
    R = model.posterior(init, X, y)
    np.testing.assert_allclose(R.numpy(), joint / joint.sum(1, keepdims=True), rtol=1e-10)
    # NOTES 1.5: tau = sigma(w.x + 2 y beta.x / sigma^2) (linear), sigma(w.x + y beta.x) (logistic)
    u, v = X @ init["w"], X @ init["beta"]
    if name == "symmoline":
        tau = torch.sigmoid(u + 2 * y * v)
        pred = model.predict(init, X)
        assert pred.shape == (9,)
        g = torch.sigmoid(u)
        assert torch.allclose(pred, g * v - (1 - g) * v)
    else:
        s = 2 * y - 1
        tau = torch.sigmoid(u + s * v)
        probs = model.predict(init, X)
        assert probs.shape == (9, 2) and torch.allclose(probs.sum(1), torch.ones(9,
                                                                               dtype=X.dtype))
        # labels coded -1/+1 give the same likelihood as class indices 0/1
        assert torch.equal(model.log_likelihood(init, X, s), model.log_likelihood(init, X, y))
        # P(y | x) from predict agrees with the likelihood
        lik = torch.exp(model.log_likelihood(init, X, y))
        assert torch.allclose(lik, probs[torch.arange(9), y.long()])
    assert torch.allclose(R[:, 0], tau)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_nll_gradients_match_finite_differences(name):
    _, model, X, y, _, init = setup(name, n=40, n_test=5, d=3)

    def f(beta, w):
        return model.nll({"beta": beta, "w": w}, X, y)

    inputs = tuple(init[k].clone().requires_grad_(True) for k in ("beta", "w"))
    assert torch.autograd.gradcheck(f, inputs)


def test_parameter_error_sign_symmetry_and_init_schemes():
    _, model, X, y, truth, init = setup("symmoline", d=5, n=30, n_test=5)
    flipped = {k: -v for k, v in truth.items()}
    assert model.parameter_error(truth, truth) == 0.0
    assert model.parameter_error(flipped, truth) == 0.0
    assert torch.allclose(model.log_likelihood(flipped, X, y), model.log_likelihood(truth, X, y))
    assert model.parameter_error(init, truth) == pytest.approx(2.0)  # radius 1 on each block
    gen = torch.Generator().manual_seed(0)
    unit = model.init_params(InitSpec(scheme="unit-rows", scale=2.0), gen)
    assert float(unit["beta"].norm()) == pytest.approx(2.0)
    assert float(unit["w"].norm()) == pytest.approx(2.0)
    assert model.shapes() == {"beta": (5,), "w": (5,)}
    assert model.param_groups() == {"experts": ["beta"], "gate": ["w"]}


# ----------------------------------------------------------------------------------- EM


def test_symmoline_em_beta_is_the_closed_form():
    _, model, X, y, _, init = setup("symmoline", n=500, n_test=5)
    R = model.posterior(init, X, y)
    new, _ = model.m_step(X, y, R, init, GateOptions())
    expected = torch.linalg.solve(X.T @ X, X.T @ ((2 * R[:, 0] - 1) * y))
    assert torch.allclose(new["beta"], expected, atol=1e-10)
    half, _ = model.m_step(X, y, R, init, GateOptions(), eta=0.5)
    assert torch.allclose(half["beta"], 0.5 * expected + 0.5 * init["beta"], atol=1e-10)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_mirror_step_is_exact_dual_space_step(name, eta, monkeypatch):
    """(b) exactly, for an unprojected family: grad A(theta+) - grad A(theta_t) = -eta grad L.

    No ridge (a radius far outside the iterates keeps the problem well posed), so the step is the
    plain mirror step; ``grad L`` comes from autograd on the NLL (Fisher identity). The Newton
    solver runs to machine precision (its default threshold stops at a gradient of ~1e-6)."""
    monkeypatch.setattr(symmetric, "DEFAULT_TOL", 0.0)
    _, model, X, y, _, params = setup(name, n=600, n_test=5)
    gate = GateOptions(ridge=0.0, radius=1e3, max_steps=50)
    for _ in range(3):
        R = model.posterior(params, X, y)
        new, _ = model.m_step(X, y, R, params, gate, eta=eta)
        lhs = dual(model, new, X) - dual(model, params, X)
        rhs = -eta * grad_nll(model, params, X, y)
        # Exact in exact arithmetic; the unridged Newton solve amplifies rounding to ~1e-8,
        # which depends on the BLAS thread count.
        assert torch.allclose(lhs, rhs, atol=1e-7, rtol=1e-6), float((lhs - rhs).abs().max())
        # (c): the mirror objective is negative at theta+ and equals what mirror-em reports
        delta = flat(new) - flat(params)
        bregman = float(log_partition(model, new, X) - log_partition(model, params, X)
                        - dual(model, params, X) @ delta)
        kl = float(model.complete_data_kl(params, new, X).mean())
        assert kl == pytest.approx(bregman, rel=1e-8, abs=1e-14)
        md = float(eta * grad_nll(model, params, X, y) @ delta) + bregman
        assert md < 0
        dq = float(model.q_value(new, X, y, R) - model.q_value(params, X, y, R))
        assert -eta * dq + (1 - eta) * kl == pytest.approx(md, rel=1e-7)
        params = new


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_em_family_is_monotone_and_beats_gd(name):
    """r = 4, n = 1000, near-truth init (perturbation 1.5 on each of beta and w), 50 iterations."""
    _, model, X, y, truth, init = setup(name, init_radius=1.5)
    results = {}
    for label, alg in [
        ("joint-em", JointEM(JointEM.Params(tol=0))),
        ("mirror-em[eta=0.5]", MirrorEM(MirrorEM.Params(eta=0.5, tol=0))),
        ("gradient-em", GradientEM()),
        ("gd", GradientDescent()),
    ]:
        _, objectives, errors, extras = run(alg, model, X, y, init, 50, truth)
        assert len(objectives) == 51
        if "em" in label and label != "gradient-em":
            assert_monotone(objectives)
            assert all(e["md_objective"] <= 1e-12 for e in extras[1:] if "md_objective" in e)
        results[label] = (objectives[-1], errors[-1])
    print(f"\n{name}: init error {model.parameter_error(init, truth):.3f}; "
          + "; ".join(f"{k}: nll {v[0]:.4f}, error {v[1]:.4f}" for k, v in results.items()))
    assert results["joint-em"][1] < results["gd"][1]
    assert results["joint-em"][0] < results["gd"][0]
    assert results["mirror-em[eta=0.5]"][1] < results["gd"][1]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_gradient_em_with_backtracking_is_monotone(name):
    _, model, X, y, truth, init = setup(name, init_radius=1.5, n=500)
    alg = GradientEM(GradientEM.Params(step_rule="backtracking", expert_lr=8.0, gate_lr=16.0))
    _, objectives, errors, _ = run(alg, model, X, y, init, 20, truth)
    assert_monotone(objectives)
    assert errors[-1] < errors[0]


def test_runner_end_to_end(fresh_plugins, tmp_path):
    text = textwrap.dedent("""
        name: fruytier
        seed: 3
        budget: {max_iter: 5}
        metrics: [param_error, train_nll, test_nll]
        init: {scheme: near-truth, radius: 1.0}
        datasets:
          - name: symmoline
            params: {n: 200, n_test: 100}
          - name: symmologe
            params: {n: 200, n_test: 100}
        algorithms:
          - name: joint-em
          - name: mirror-em
            params: {eta: 0.5}
          - name: gradient-em
          - name: gd
    """)
    frame = read_results(run_suite(parse_suite(text), tmp_path))
    fin = frame[frame["record"] == "final"]
    assert len(fin) == 8
    assert set(fin["status"]) == {"max_iter"}, fin[["algorithm", "status", "message"]]
    assert np.isfinite(fin["param_error"]).all()
    assert "extra.kl_step" in frame.columns
