"""The regression MoE model: likelihood, posterior, gradients, parameter error, M-steps."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from moebench import InitSpec
from moebench.errors import UnsupportedProblem
from moebench_plugins.models.regression import RegressionMoE


def make_model(k=3, d=4, **kw) -> RegressionMoE:
    return RegressionMoE(RegressionMoE.Params(k=k, **kw), n_features=d)


def random_params(model: RegressionMoE, seed: int = 0, scale: float = 1.0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    p = model.init_params(InitSpec(scheme="random", scale=scale), gen)
    p["log_sigma"] = torch.linspace(-1.0, 0.5, model.n_experts, dtype=torch.float64)
    return p


def random_data(n: int, d: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.standard_normal((n, d))), torch.as_tensor(rng.standard_normal(n))


def naive_joint(model: RegressionMoE, params: dict, X: torch.Tensor, y: torch.Tensor):
    """p(y_n, z_n = i | x_n) by the textbook formula, in plain numpy loops."""
    A, W = params["A"].numpy(), params["W"].numpy()
    sig = np.exp(params["log_sigma"].numpy())
    X, y = X.numpy(), y.numpy()
    g = {
        "linear": lambda t: t,
        "sigmoid": lambda t: 1 / (1 + math.exp(-t)),
        "relu": lambda t: max(t, 0.0),
    }[model.params.activation]
    out = np.zeros((X.shape[0], model.n_experts))
    for n in range(X.shape[0]):
        x = np.append(X[n], 1.0) if model.params.intercept else X[n]
        logits = W @ x
        gate = np.exp(logits) / np.exp(logits).sum()
        for i in range(model.n_experts):
            mu = g(float(A[i] @ x))
            dens = math.exp(-0.5 * ((y[n] - mu) / sig[i]) ** 2) / (math.sqrt(2 * math.pi) * sig[i])
            out[n, i] = gate[i] * dens
    return out


@pytest.mark.parametrize("activation", ["linear", "sigmoid", "relu"])
@pytest.mark.parametrize("intercept", [False, True])
def test_log_likelihood_matches_naive_formula(activation, intercept):
    model = make_model(k=3, d=4, activation=activation, noise="per_expert", intercept=intercept)
    params = random_params(model)
    X, y = random_data(7, 4)
    joint = naive_joint(model, params, X, y)
    ll = model.log_likelihood(params, X, y)
    assert ll.shape == (7,)
    np.testing.assert_allclose(ll.numpy(), np.log(joint.sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(float(model.nll(params, X, y)), -np.log(joint.sum(1)).mean())


def test_posterior_is_bayes_rule():
    model = make_model(k=3, d=4, activation="sigmoid", noise="per_expert")
    params = random_params(model)
    X, y = random_data(9, 4)
    post = model.posterior(params, X, y)
    joint = naive_joint(model, params, X, y)
    np.testing.assert_allclose(post.sum(dim=1).numpy(), 1.0, rtol=1e-14)
    np.testing.assert_allclose(post.numpy(), joint / joint.sum(axis=1, keepdims=True), rtol=1e-10)


def test_predict_is_gate_weighted_expert_mean():
    model = make_model(k=3, d=4, activation="relu")
    params = random_params(model)
    X, _ = random_data(6, 4)
    gate = torch.softmax(X @ params["W"].T, dim=1)
    expected = (gate * torch.relu(X @ params["A"].T)).sum(dim=1)
    torch.testing.assert_close(model.predict(params, X), expected)


def test_likelihood_finite_for_extreme_parameters():
    model = make_model(k=3, d=4, noise="per_expert")
    params = random_params(model)
    params["W"] = params["W"] * 1e4  # gate logits of order 1e4: saturated softmax
    params["W"][-1] = 0
    params["log_sigma"] = torch.tensor([-5.0, 0.0, 3.0], dtype=torch.float64)
    X, y = random_data(50, 4)
    y = y * 1e3  # residuals of 1e3 with sigma = e^-5: densities underflow in linear space
    ll = model.log_likelihood(params, X, y)
    post = model.posterior(params, X, y)
    assert torch.isfinite(ll).all()
    assert torch.isfinite(post).all()
    torch.testing.assert_close(post.sum(dim=1), torch.ones(50, dtype=torch.float64))
    nll = model.nll({k: v.requires_grad_(True) for k, v in params.items()}, X, y)
    nll.backward()
    assert all(torch.isfinite(v.grad).all() for v in params.values())


@pytest.mark.parametrize("activation", ["linear", "sigmoid"])
def test_nll_gradients_match_finite_differences(activation):
    model = make_model(k=3, d=3, activation=activation, noise="per_expert", intercept=True)
    p = random_params(model, scale=2.0)
    X, y = random_data(12, 3)
    free = model.free_params(p)
    names = list(free)

    def f(*tensors):
        return model.nll(model.from_free(dict(zip(names, tensors, strict=True)), p), X, y)

    inputs = tuple(free[n].clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_parameter_error_zero_at_truth_and_permutation_invariant():
    model = make_model(k=4, d=5)
    truth = random_params(model, seed=3)
    est = random_params(model, seed=4)
    assert model.parameter_error(truth, truth) == 0.0
    base = model.parameter_error(est, truth)
    assert base > 0
    for perm in itertools.permutations(range(4)):
        P = list(perm)
        W = est["W"][P]
        permuted = {"A": est["A"][P], "W": W - W[-1], "log_sigma": est["log_sigma"][P]}
        assert model.parameter_error(permuted, truth) == pytest.approx(base, rel=1e-12, abs=1e-12)
        Wt = truth["W"][P]
        relabelled_truth = {"A": truth["A"][P], "W": Wt - Wt[-1], "log_sigma": truth["log_sigma"]}
        assert model.parameter_error(relabelled_truth, truth) < 1e-12


def test_parameter_error_with_many_experts_uses_assignment():
    model = make_model(k=9, d=12)
    truth = random_params(model, seed=5)
    P = [3, 1, 8, 0, 2, 7, 6, 4, 5]
    W = truth["W"][P]
    permuted = {"A": truth["A"][P], "W": W - W[-1], "log_sigma": truth["log_sigma"]}
    assert model.parameter_error(permuted, truth) < 1e-12
    shifted = {**permuted, "A": permuted["A"] + 0.01}
    expected = 0.01 * math.sqrt(9 * 12)
    assert model.parameter_error(shifted, truth) == pytest.approx(expected, rel=1e-9)


def test_init_schemes():
    model = make_model(k=3, d=6, intercept=True, sigma=0.5)
    assert model.shapes() == {"A": (3, 7), "W": (3, 7), "log_sigma": (3,)}
    gen = torch.Generator().manual_seed(0)
    for scheme in ("random", "unit-rows"):
        p = model.init_params(InitSpec(scheme=scheme, scale=2.0), gen)
        assert {k: tuple(v.shape) for k, v in p.items()} == model.shapes()
        assert (p["W"][-1] == 0).all()
        expected = torch.full((3,), math.log(0.5), dtype=torch.float64)
        torch.testing.assert_close(p["log_sigma"], expected)
    p = model.init_params(InitSpec(scheme="unit-rows", scale=2.0), gen)
    torch.testing.assert_close(p["A"].norm(dim=1), torch.full((3,), 2.0, dtype=torch.float64))
    truth = model.init_params(InitSpec(scheme="random"), gen)
    near = model.init_params(InitSpec(scheme="near-truth", radius=0.3), gen, truth)
    assert float((near["A"] - truth["A"]).norm()) == pytest.approx(0.3)
    assert float((near["W"] - truth["W"]).norm()) == pytest.approx(0.3)
    assert (near["W"][-1] == 0).all()
    with pytest.raises(UnsupportedProblem, match="near-truth"):
        model.init_params(InitSpec(scheme="near-truth"), gen, None)
    with pytest.raises(ValueError, match="near-truth"):
        model.init_params(InitSpec(scheme="near-truth"), gen, None)
    # same generator seed, same draw
    a = model.init_params(InitSpec(), torch.Generator().manual_seed(7))
    b = model.init_params(InitSpec(), torch.Generator().manual_seed(7))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_linear_m_step_is_weighted_least_squares_and_updates_noise():
    X, y = random_data(200, 3, seed=2)
    R = torch.softmax(torch.as_tensor(np.random.default_rng(3).standard_normal((200, 2))), dim=1)
    for noise in ("known", "shared", "per_expert"):
        model = make_model(k=2, d=3, noise=noise, intercept=True, sigma=0.7)
        params = random_params(model)
        params["log_sigma"] = torch.full((2,), math.log(0.7), dtype=torch.float64)
        new = model.m_step_experts(X, y, R, params)
        F = np.hstack([X.numpy(), np.ones((200, 1))])
        res2 = np.zeros((200, 2))
        for i in range(2):
            sw = np.sqrt(R[:, i].numpy())
            a = np.linalg.lstsq(F * sw[:, None], y.numpy() * sw, rcond=None)[0]
            np.testing.assert_allclose(new["A"][i].numpy(), a, rtol=1e-6, atol=1e-8)
            res2[:, i] = (y.numpy() - F @ a) ** 2
        Rn = R.numpy()
        if noise == "known":
            torch.testing.assert_close(new["log_sigma"], params["log_sigma"])
        elif noise == "shared":
            s2 = (Rn * res2).sum() / Rn.sum()
            np.testing.assert_allclose(new["log_sigma"].numpy(), 0.5 * np.log(s2) * np.ones(2))
        else:
            s2 = (Rn * res2).sum(0) / Rn.sum(0)
            np.testing.assert_allclose(new["log_sigma"].numpy(), 0.5 * np.log(s2))
        torch.testing.assert_close(new["W"], params["W"])


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_nonlinear_m_step_decreases_weighted_error(activation):
    model = make_model(k=2, d=3, activation=activation)
    truth = random_params(model, seed=8, scale=2.0)
    X, _ = random_data(300, 3, seed=4)
    y = model.expert_means(truth, X)[:, 0] + 0.01 * torch.randn(300, dtype=torch.float64)
    R = torch.zeros(300, 2, dtype=torch.float64)
    R[:, 0] = 1.0
    start = {**truth, "A": truth["A"] + 0.3}

    def sse(p):
        return float((R[:, 0] * (y - model.expert_means(p, X)[:, 0]) ** 2).sum())

    new = model.m_step_experts(X, y, R, start)
    assert sse(new) < sse(start)
    torch.testing.assert_close(new["A"][1], start["A"][1])  # no responsibility: unchanged


def test_gradient_and_hessian_of_the_chunked_nll_are_those_of_the_dense_nll():
    # nll with autograd on the parameters runs one fused pass and returns Fisher's-identity
    # gradients; second derivatives (Newton, Hessian-vector products) must still be right
    model = make_model(k=3, d=4, noise="per_expert", intercept=True)
    params = random_params(model, seed=2)
    X, y = random_data(300, 4)
    names = ("A", "W", "log_sigma")

    def chunked(*tensors):
        return model.nll(dict(zip(names, tensors, strict=True)), X, y)

    def dense(*tensors):
        return -model.log_likelihood(dict(zip(names, tensors, strict=True)), X, y).mean()

    args = tuple(params[n].clone().requires_grad_() for n in names)
    for got, expected in zip(torch.autograd.grad(chunked(*args), args),
                             torch.autograd.grad(dense(*args), args), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    H = torch.autograd.functional.hessian(chunked, tuple(params[n] for n in names))
    H_dense = torch.autograd.functional.hessian(dense, tuple(params[n] for n in names))
    for row, row_dense in zip(H, H_dense, strict=True):
        for block, block_dense in zip(row, row_dense, strict=True):
            torch.testing.assert_close(block, block_dense, rtol=1e-9, atol=1e-12)
