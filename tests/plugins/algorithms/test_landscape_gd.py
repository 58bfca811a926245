"""landscape-gd (a reconstruction of Makkuva et al. 2020 from NOTES-makkuva-2020.md): expert
recovery, the two reported stages, the sign rule and the model families it declines. The
conformance kit runs on it from tests/testing/test_conformance.py."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from moebench import InitSpec, Problem
from moebench.density import GaussianMixtureDensity
from moebench.errors import UnsupportedProblem
from moebench_plugins.algorithms.landscape_gd import LandscapeGD, unit_signed_rows
from moebench_plugins.datasets.synthetic import SyntheticMoE
from moebench_plugins.models.classification import LogisticMoE
from moebench_plugins.models.regression import RegressionMoE


def orthonormal_problem(n=20000, d=8, k=3, sigma=0.5, seed=0):
    """Linear experts: the first k rows of a random orthogonal matrix; gate rows the next k - 1
    (orthogonal to the experts, norm 1), the last row 0; x ~ N(0, I_d)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    A = Q[:, :k].T.contiguous()
    W = torch.zeros(k, d, dtype=torch.float64)
    W[: k - 1] = Q[:, k : 2 * k - 1].T
    model = RegressionMoE(RegressionMoE.Params(k=k, sigma=sigma), n_features=d)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = torch.multinomial(torch.softmax(X @ W.T, dim=1), 1, generator=g).squeeze(1)
    y = (X * A[z]).sum(dim=1) + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    truth = {"A": A, "W": W, "log_sigma": torch.full((k,), math.log(sigma), dtype=torch.float64)}
    init = model.init_params(InitSpec(), torch.Generator().manual_seed(seed + 1))
    return model, truth, X, y, init


def fit(model, X, y, init, stop_after=None, **params):
    log = []

    def callback(it):
        log.append(it)
        return stop_after is None or it.iteration < stop_after

    algorithm = LandscapeGD(LandscapeGD.Params(**params))
    final = algorithm.fit(Problem(model, X, y, torch.Generator().manual_seed(0)), init, callback)
    return final, log


def worst_expert_error(A, A_true):
    """max_i ||a_i - a*_pi(i)|| for the best permutation pi."""
    k = A.shape[0]
    return min(max(float((A[list(p)] - A_true)[i].norm()) for i in range(k))
               for p in itertools.permutations(range(k)))


@pytest.fixture(scope="module")
def orthonormal_fit():
    model, truth, X, y, init = orthonormal_problem()
    final, log = fit(model, X, y, init)
    return model, truth, X, y, init, final, log


def test_recovers_orthonormal_linear_experts(orthonormal_fit):
    """k = 3, d = 8, n = 20000, sigma = 0.5, orthonormal experts, orthogonal gate. Over ten
    seeds of this problem the worst expert's distance was 0.07-0.19 (the fourth-moment noise at
    this n) and the final NLL 0.006-0.025 above the truth's; random unit vectors in R^8 are about
    1.4 apart. 0.3 (cosine > 0.955) and 0.05 leave room for rounding across platforms."""
    model, truth, X, y, init, final, log = orthonormal_fit
    assert worst_expert_error(init["A"], truth["A"]) > 0.8
    assert worst_expert_error(final["A"], truth["A"]) < 0.3
    assert log[-1].objective - float(model.nll(truth, X, y)) < 0.05
    assert model.parameter_error(final, truth) < 0.6
    torch.testing.assert_close(final["A"].norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_reports_stage_one_then_stage_two_with_the_training_nll(orthonormal_fit):
    model, truth, X, y, init, final, log = orthonormal_fit
    assert [it.iteration for it in log] == list(range(len(log)))
    phases = [it.extras["phase"] for it in log[1:]]
    n1 = phases.count(1.0)
    assert n1 > 0 and phases == [1.0] * n1 + [2.0] * (len(phases) - n1) and len(phases) > n1
    for it in log[-3:]:  # the objective is the training NLL of the reported parameters
        assert it.objective == pytest.approx(float(model.nll(it.params, X, y)), rel=1e-9)
    gate_nlls = [it.objective for it in log[n1 + 1 :]]
    assert all(b <= a for a, b in itertools.pairwise(gate_nlls))  # backtracking GD
    assert final is log[-1].params


def test_whitening_recovers_non_orthogonal_experts_of_synthetic_moe():
    """synthetic-moe's experts are random unit vectors (pairwise cosines up to 0.25 here), not
    orthonormal: the L_4 landscape is run in the coordinates whitened by E^[Q2]."""
    data = SyntheticMoE(SyntheticMoE.Params(n=20000, n_test=10, d=8, k=3, sigma=0.5)).load(0)
    model = RegressionMoE(RegressionMoE.Params.model_validate(data.model.params),
                          n_features=data.n_features)
    truth = model.as_tensors(data.truth)
    init = model.init_params(InitSpec(), torch.Generator().manual_seed(1))
    final, _ = fit(model, torch.as_tensor(data.X_train), torch.as_tensor(data.y_train), init)
    assert worst_expert_error(final["A"], truth["A"]) < 0.3


def test_stopping_in_stage_two_returns_the_reported_parameters():
    """(From a start drawn with the problem's generator: the two fits take the same steps.)"""
    model, truth, X, y, init = orthonormal_problem(n=3000)
    _, full = fit(model, X, y, init, expert_start="gaussian")
    first_gate_step = next(it.iteration for it in full if it.extras.get("phase") == 2.0)
    final, log = fit(model, X, y, init, stop_after=first_gate_step + 1, expert_start="gaussian")
    assert len(log) == first_gate_step + 2
    assert final is log[-1].params
    torch.testing.assert_close(final["A"], full[first_gate_step + 1].params["A"])


def test_sign_rule_makes_the_output_correlation_positive():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(5000, 4, generator=g, dtype=torch.float64)
    a = torch.tensor([0.6, 0.8, 0.0, 0.0], dtype=torch.float64)
    y = torch.relu(X @ a) + 0.1 * torch.randn(5000, generator=g, dtype=torch.float64)
    for sign in (1.0, -1.0):
        got = unit_signed_rows(torch.stack([3 * sign * a, torch.tensor([0, 0, 2.0, 0])]), X, y)
        torch.testing.assert_close(got[0], a)
        assert float(got[1].norm()) == pytest.approx(1.0)


def test_declines_what_it_cannot_fit():
    algorithm = LandscapeGD()
    assert algorithm.unsupported_reason(RegressionMoE(RegressionMoE.Params(k=2), n_features=4)) \
        is None
    assert "intercept" in algorithm.unsupported_reason(
        RegressionMoE(RegressionMoE.Params(k=2, intercept=True), n_features=4))
    assert "k <= d" in algorithm.unsupported_reason(
        RegressionMoE(RegressionMoE.Params(k=5), n_features=4))
    assert "regression MoE" in algorithm.unsupported_reason(
        LogisticMoE(LogisticMoE.Params(k=2), n_features=4, n_classes=3))
    model, _, X, y, init = orthonormal_problem(n=200, d=4, k=2)
    mixture = GaussianMixtureDensity(torch.tensor([0.5, 0.5]).numpy(), torch.eye(4)[:2].numpy())
    problem = Problem(model, X, y, torch.Generator(), input_density=mixture)
    with pytest.raises(UnsupportedProblem, match="Gaussian mixture"):
        algorithm.fit(problem, init, lambda it: True)


def test_the_notes_unwhitened_loss_runs_away(orthonormal_fit):
    """whiten=False is the notes' L_4 on A itself: at n = 20000, d = 8 its empirical version is
    unbounded below along directions outside the experts' span, and within 12 steps the
    landscape value is below -1e3 (the whitened loss stays near its population minimum, about
    -mu sum_i 1/q_i); the reported objective stays finite either way."""
    model, truth, X, y, init, _, whitened = orthonormal_fit
    _, notes_form = fit(model, X, y, init, whiten=False, expert_iters=12, gate_iters=1)
    landscape = [it.extras["landscape"] for it in notes_form if it.extras.get("phase") == 1.0]
    assert min(landscape) < -1e3
    assert all(math.isfinite(it.objective) for it in notes_form)
    landscape = [it.extras["landscape"] for it in whitened if it.extras.get("phase") == 1.0]
    assert -20 < landscape[-1] < 0
