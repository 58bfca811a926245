"""The Makkuva et al. (2019) generator: stated properties of parameters, inputs and gate."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.special import softmax

from moebench.density import GaussianMixtureDensity
from moebench_plugins.datasets.synthetic import SyntheticMoE


def generate(seed: int = 0, **params):
    return SyntheticMoE(SyntheticMoE.Params(**params)).generate(seed)


def test_gaussian_outputs_are_unchanged_by_the_gmm_extension():
    """Seeds stay reproducible: Gaussian inputs give the arrays of the original generator."""
    s = generate(5)
    h = hashlib.sha256()
    for a in (s.A, s.W, s.X, s.y):
        h.update(np.round(a, 8).tobytes())
    h.update(s.z.astype(np.int64).tobytes())
    assert h.hexdigest() == "191a92f6ee91dfd0feaff00238375963042756f74551ae5b0c8879817e600124"


@pytest.mark.parametrize("inputs", ["gaussian", "gmm"])
def test_same_seed_same_arrays(inputs):
    a = SyntheticMoE(SyntheticMoE.Params(n=200, n_test=50, inputs=inputs)).load(3)
    b = SyntheticMoE(SyntheticMoE.Params(n=200, n_test=50, inputs=inputs)).load(3)
    c = SyntheticMoE(SyntheticMoE.Params(n=200, n_test=50, inputs=inputs)).load(4)
    for name in ("X_train", "y_train", "X_test", "y_test"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    for key in a.truth:
        assert np.array_equal(a.truth[key], b.truth[key])


@pytest.mark.parametrize("k,d", [(2, 10), (3, 5), (4, 12)])
def test_regressors_and_gates_on_the_unit_sphere_orthogonal_to_span_a(k, d):
    s = generate(1, k=k, d=d, n=10, n_test=10, gating="orthogonal")
    assert np.allclose(np.linalg.norm(s.A, axis=1), 1.0)
    assert np.allclose(np.linalg.norm(s.W[:-1], axis=1), 1.0)
    assert np.array_equal(s.W[-1], np.zeros(d))
    assert np.abs(s.W @ s.A.T).max() < 1e-12  # every gate vector is orthogonal to span(a)


def test_generic_gates_are_not_orthogonal_and_keep_their_norm():
    s = generate(1, k=3, d=10, gating="generic", gate_norm=2.0, n=10, n_test=10)
    assert np.allclose(np.linalg.norm(s.W[:-1], axis=1), 2.0)
    assert np.abs(s.W[:-1] @ s.A.T).max() > 1e-3


def test_orthogonal_gating_needs_enough_dimensions():
    with pytest.raises(ValueError, match="d >= 2k - 1"):
        SyntheticMoE.Params(k=3, d=4, gating="orthogonal")


@pytest.mark.parametrize("inputs", ["gaussian", "gmm"])
def test_expert_frequencies_match_mean_softmax_probabilities(inputs):
    n = 40000
    s = generate(7, k=3, d=6, n=n, n_test=1, gate_norm=1.5, inputs=inputs, p=0.3)
    probs = softmax(s.X @ s.W.T, axis=1)
    expected = probs.mean(axis=0)
    observed = np.bincount(s.z, minlength=3) / s.z.size
    # binomial sampling error of each frequency around the (conditional) mean probability
    se = np.sqrt(expected * (1 - expected) / s.z.size)
    assert np.all(np.abs(observed - expected) < 5 * se), (observed, expected)
    # and per sample: the latent expert is more often the one with the larger gate probability
    top = probs.argmax(axis=1)
    assert np.mean(top == s.z) == pytest.approx(np.mean(probs.max(axis=1)), abs=0.02)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_gmm_inputs_match_mixture_moments(p):
    n, d = 60000, 6
    s = generate(11, d=d, n=n, n_test=1, inputs="gmm", p=p)
    mu = s.density.means
    assert np.allclose(s.density.weights, [p, 1 - p])
    assert np.allclose(np.linalg.norm(mu, axis=1), 1.0)  # means on the unit sphere
    assert not np.allclose(mu[0], -mu[1])  # drawn independently, not mirrored
    X = s.X
    assert np.mean(s.component == 0) == pytest.approx(p, abs=5 * np.sqrt(p * (1 - p) / X.shape[0]))
    mean = p * mu[0] + (1 - p) * mu[1]
    delta = mu[0] - mu[1]
    cov = np.eye(d) + p * (1 - p) * np.outer(delta, delta)
    # standard errors: about sqrt(var / n) for the mean, sqrt(2 / n) for covariance entries
    assert np.abs(X.mean(axis=0) - mean).max() < 5 * np.sqrt(np.diag(cov).max() / X.shape[0])
    assert np.abs(np.cov(X, rowvar=False) - cov).max() < 6 * np.sqrt(2.0 / X.shape[0]) * 1.5
    # inputs of each component are N(mu_j, I)
    for j in (0, 1):
        Xj = X[s.component == j] - mu[j]
        assert np.abs(Xj.mean(axis=0)).max() < 5 / np.sqrt(Xj.shape[0])


def test_data_exposes_the_input_density():
    gauss = SyntheticMoE(SyntheticMoE.Params(n=50, n_test=10, d=4)).load(0)
    assert isinstance(gauss.input_density, GaussianMixtureDensity)
    assert gauss.input_density.is_standard and gauss.input_density.means.shape == (1, 4)
    gmm = SyntheticMoE(SyntheticMoE.Params(n=50, n_test=10, d=4, inputs="gmm", p=0.7)).load(0)
    dens = gmm.input_density
    assert not dens.is_standard and np.allclose(dens.weights, [0.7, 0.3])
    assert dens.means.shape == (2, 4)
    assert gmm.meta["inputs"] == "gmm" and gmm.meta["p"] == 0.7
    # the same draw as generate(): the density's means generated these inputs
    s = SyntheticMoE(SyntheticMoE.Params(n=50, n_test=10, d=4, inputs="gmm", p=0.7)).generate(0)
    assert np.array_equal(s.density.means, dens.means)
    assert np.array_equal(s.X[:50], gmm.X_train)


@pytest.mark.parametrize("activation", ["linear", "sigmoid", "relu"])
def test_targets_follow_the_chosen_expert(activation):
    from moebench_plugins.datasets.synthetic import activation_np

    s = generate(2, k=2, d=5, n=3000, n_test=1, sigma=0.05, activation=activation,
                 inputs="gmm", p=0.4)
    mean = activation_np(np.einsum("nd,nd->n", s.X, s.A[s.z]), activation)
    resid = s.y - mean
    assert abs(resid.std() - 0.05) < 0.005 and abs(resid.mean()) < 0.005


def test_expert_cosine_sets_the_separation_of_the_experts_and_nothing_else():
    """``expert_cosine = c``: unit regressors whose pairwise cosines are about c (c + (1 - c)
    times the cosine of independent draws); every other draw stays the default's."""
    base = generate(7, k=8, d=10, n=50, n_test=10, gating="generic")
    assert np.array_equal(generate(7, k=8, d=10, n=50, n_test=10, gating="generic",
                                   expert_cosine=0.0).A, base.A)
    for c in (0.5, 0.9):
        s = generate(7, k=8, d=10, n=50, n_test=10, gating="generic", expert_cosine=c)
        assert np.allclose(np.linalg.norm(s.A, axis=1), 1.0)
        cos = (s.A @ s.A.T)[np.triu_indices(8, 1)]
        assert abs(cos.mean() - c) < 0.15 * (1 - c) + 0.05
        # the spread around c shrinks with 1 - c: every pair shares the common direction
        base_cos = (base.A @ base.A.T)[np.triu_indices(8, 1)]
        assert cos.std() < (1 - c) * base_cos.std() * 1.5
        assert np.array_equal(s.X, base.X) and np.array_equal(s.W, base.W)
    with pytest.raises(ValueError):
        SyntheticMoE.Params(expert_cosine=1.0)
