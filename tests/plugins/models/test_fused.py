"""The fused native pass, its vectorised exp/log, the lazy gate Hessians and the Hessian reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moebench import InitSpec
from moebench.em import GateOptions
from moebench_plugins.models import gate as gate_module
from moebench_plugins.models import kernels, native
from moebench_plugins.models.caching import data_cache
from moebench_plugins.models.kernels import ChunkedLabels, RowChunks, em_pass, fused_pass, gate_pass
from moebench_plugins.models.kernels import passes as kernel_passes
from moebench_plugins.models.regression import RegressionMoE
from moebench_plugins.models.regression import em as regression_em

needs_native = pytest.mark.skipif(not native.native_available(),
                                  reason="no C compiler: the native kernel cannot be built")


def _ulps(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(got - ref) / np.spacing(np.abs(ref))


@needs_native
def test_vector_exp_and_log_are_within_an_ulp_or_two_of_libm():
    rng = np.random.default_rng(0)
    for lo, hi in [(-0.35, 0.35), (-40.0, 0.0), (-700.0, 700.0), (-745.0, -708.0)]:
        x = rng.uniform(lo, hi, 40_003)
        got = native.vector_exp(torch.from_numpy(x)).numpy()
        assert _ulps(got, np.exp(x)).max() <= 2, (lo, hi)
    x = np.exp(rng.uniform(-700, 700, 40_003))
    got = native.vector_log(torch.from_numpy(x)).numpy()
    assert _ulps(got, np.log(x)).max() <= 2
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 710.0, -746.0, 0.0])
    out = native.vector_exp(special.double())
    assert torch.isnan(out[0]) and out[1] == float("inf") and out[2] == 0.0
    assert out[3] == float("inf") and out[4] == 0.0 and out[5] == 1.0
    logs = native.vector_log(torch.tensor([1.0, float("inf"), float("nan"), -1.0],
                                          dtype=torch.float64))
    assert logs[0] == 0.0 and logs[1] == float("inf") and logs[2:].isnan().all()


def _data(n: int, k: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, dtype=torch.float64, generator=g)
    y = torch.randn(n, dtype=torch.float64, generator=g)
    A = torch.randn(k, d, dtype=torch.float64, generator=g)
    W = torch.randn(k, d, dtype=torch.float64, generator=g)
    W[-1] = 0
    log_sigma = 0.3 * torch.randn(k, dtype=torch.float64, generator=g)
    return X, y, A, W, log_sigma


def _close(a, b, rtol=1e-12):
    if isinstance(a, float):
        assert a == pytest.approx(b, rel=rtol, abs=rtol)
        return
    scale = float(b.abs().max().clamp_min(1.0)) if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale)


def _both(monkeypatch, fn):
    """``fn()`` with the fused native pass and with the torch kernels it replaces."""
    monkeypatch.setattr(fused_pass, "FUSED", True)
    fused = fn()
    monkeypatch.setattr(fused_pass, "FUSED", False)
    reference = fn()
    monkeypatch.setattr(fused_pass, "FUSED", True)
    return fused, reference


@needs_native
@pytest.mark.parametrize(("n", "k", "d", "chunk"),
                         [(10_000, 4, 10, 65536), (1001, 3, 5, 256), (7, 2, 3, 64),
                          (3000, 16, 6, 1000), (700, 5, 30, 333), (513, 1, 4, 100)])
def test_fused_pass_equals_the_torch_kernels(monkeypatch, n, k, d, chunk):
    X, y, A, W, log_sigma = _data(n, k, d)
    chunks = RowChunks(X, y, chunk_size=chunk)
    assert fused_pass._fused_applies(
        kernels.KernelSpec(k=k, n_features=d, expert_stats=True, gate=True, gate_system=True),
        chunks)

    def run():
        R = torch.empty(n, k, dtype=torch.float64)
        ll = torch.empty(n, dtype=torch.float64)
        blocks = ChunkedLabels(n)
        full = em_pass(chunks, A, W, log_sigma, R_out=R, loglik_out=ll, expert_stats=True,
                       gate=True)
        em_pass(chunks, A, W, log_sigma, R_out=blocks)
        given = em_pass(chunks, A, W, log_sigma, labels=R, expert_stats=True, gate=True)
        gates = [gate_pass(chunks, blocks, W, system=s, hessian=h)
                 for s, h in ((True, True), (True, False), (False, True))]
        return full, R, ll, blocks.to_tensor(), given, gates

    fused, ref = _both(monkeypatch, run)
    for got, want in zip(fused[1:4], ref[1:4], strict=True):
        _close(got, want)
    for got, want in ((fused[0], ref[0]), (fused[4], ref[4])):
        if got.loglik == got.loglik:  # nan with given labels
            _close(got.loglik, want.loglik)
        for name in ("mass", "G", "b", "yy"):
            _close(getattr(got.experts, name), getattr(want.experts, name))
        _close(got.gate.q, want.gate.q)
        _close(got.gate.grad, want.gate.grad)
        _close(got.gate.neg_hessian, want.gate.neg_hessian)
    for got, want in zip(fused[5], ref[5], strict=True):
        _close(got.q, want.q)
        assert (got.grad is None) == (want.grad is None)
        assert (got.neg_hessian is None) == (want.neg_hessian is None)
        if got.grad is not None:
            _close(got.grad, want.grad)
        if got.neg_hessian is not None:
            _close(got.neg_hessian, want.neg_hessian)


@needs_native
def test_the_fused_pass_checks_its_inputs():
    fused = native.FusedPass(3, 4, posterior=False, expert_stats=True, gate=False, system=False)
    Z = torch.zeros(5, 10, dtype=torch.float64)
    sums = fused.new_sums(Z)
    with pytest.raises(ValueError, match="labels are needed"):
        fused(Z, torch.zeros(3, 4, dtype=torch.float64), Z[0, :3], Z[0, :3], None, sums)
    with pytest.raises(ValueError, match=r"Z must be \(5, c\)"):
        fused(Z[:4], torch.zeros(3, 4, dtype=torch.float64), Z[0, :3], Z[0, :3], Z[:3], sums)
    with pytest.raises(ValueError, match="1 to 16 experts"):
        native.FusedPass(17, 4, posterior=True, expert_stats=True, gate=True, system=True)


def _trajectory(model, X, y, params, gate, iterations):
    nll, steps = [], []
    for _ in range(iterations):
        params, extras = model.em_step(X, y, params, gate)
        nll.append(extras["nll"])
        steps.append(extras["gate_newton_steps"])
    return nll, steps, params


def _problem(n=4000, k=4, d=6, seed=1):
    model = RegressionMoE(RegressionMoE.Params(k=k, sigma=0.3), n_features=d)
    g = torch.Generator().manual_seed(seed)
    truth = model.init_params(InitSpec(scale=3.0), g)
    X = torch.randn(n, d, dtype=torch.float64, generator=g)
    # drawn with the test's own generator: the global RNG depends on the tests run before
    z = torch.multinomial(torch.softmax(X @ truth["W"].T, dim=1), 1, generator=g)[:, 0]
    y = (X * truth["A"][z]).sum(1) + 0.3 * torch.randn(n, dtype=torch.float64, generator=g)
    return model, X, y, model.init_params(InitSpec(), g)


def test_lazy_hessians_and_their_reuse_keep_the_em_trajectory(monkeypatch):
    """Skipping the Hessians that only confirm convergence, and reusing the one at an unchanged
    gate, gives the EM iterates of the plain Newton solve (to rounding), with fewer Hessians."""
    model, X, y, init = _problem()
    gate = GateOptions(ridge=1e-6)
    hessians = []
    real_gate_pass = gate_module.gate_pass

    def counting(*args, **kw):
        hessians.append(kw["system"] and kw.get("hessian", True))
        return real_gate_pass(*args, **kw)

    monkeypatch.setattr(gate_module, "gate_pass", counting)
    runs = {}
    for lazy in (False, True):
        monkeypatch.setattr(gate_module, "LAZY_HESSIAN", lazy)
        monkeypatch.setattr(regression_em, "REUSE_GATE_HESSIAN", lazy)
        data_cache(model.chunks(X, y)).clear()
        hessians.clear()
        runs[lazy] = (*_trajectory(model, X, y, {k: v.clone() for k, v in init.items()}, gate,
                                   40), sum(hessians))
    plain, lazy = runs[False], runs[True]
    assert lazy[1] == plain[1]  # the same Newton steps in every M-step
    np.testing.assert_allclose(lazy[0], plain[0], rtol=1e-12)
    for name in ("A", "W", "log_sigma"):
        torch.testing.assert_close(lazy[2][name], plain[2][name], rtol=1e-9, atol=1e-12)
    assert sum(plain[1]) > 20 and plain[1][-1] == 0  # the run covers steps and convergence
    assert lazy[3] < plain[3]


def test_an_unchanged_gate_reuses_the_hessian_of_the_last_m_step(monkeypatch):
    model, X, y, init = _problem(n=2000)
    gate = GateOptions(ridge=1e-6)
    params = {k: v.clone() for k, v in init.items()}
    nll, steps, params = _trajectory(model, X, y, params, gate, 60)
    assert steps[-1] == 0
    chunks = model.chunks(X, y)
    W, H = data_cache(chunks)[regression_em.GATE_HESSIAN]
    assert torch.equal(W, params["W"])
    # the Hessian sum at W by a pass of its own
    R = model.posterior(params, X, y)
    fresh = gate_pass(chunks, R, W, system=True)
    torch.testing.assert_close(H, fresh.neg_hessian, rtol=1e-11, atol=1e-9)
    passes = []
    real = kernel_passes._run_pass

    def spy(chunks_, spec, *args, **kw):
        passes.append(spec.gate_hessian and spec.gate_system)
        return real(chunks_, spec, *args, **kw)

    monkeypatch.setattr(kernel_passes, "_run_pass", spy)
    new, extras = model.em_step(X, y, params, gate)
    assert extras["gate_newton_steps"] == 0 and passes == [False]


def _dense_mirror_step(model, X, y, R, params, gate, eta):
    """The mirror step as the dense formulas compute it (the reference of the chunked step)."""
    F = model.features(X)
    labels = eta * R + (1.0 - eta) * torch.softmax(F @ params["W"].T, dim=1)
    new = model._mirror_step_experts(X, y, R, params, eta)
    W, info = gate_module.fit_softmax_gate(F, labels, params["W"], ridge=eta * gate.ridge,
                                           max_steps=gate.max_steps, radius=gate.radius,
                                           tol=gate_module.DEFAULT_TOL * eta**2)
    new["W"] = W
    return new, info["steps"]


@pytest.mark.parametrize(("noise", "intercept", "eta"),
                         [("known", False, 0.5), ("per_expert", True, 0.3),
                          ("shared", False, 0.8)])
def test_chunked_mirror_step_and_diagnostics_equal_the_dense_formulas(noise, intercept, eta):
    model, X, y, params = _problem(n=3000, k=3, d=5)
    model = RegressionMoE(RegressionMoE.Params(k=3, sigma=0.3, noise=noise, intercept=intercept),
                          n_features=5)
    params = model.init_params(InitSpec(), torch.Generator().manual_seed(4))
    params["log_sigma"] = torch.tensor([-0.5, -0.1, 0.2], dtype=torch.float64)
    gate = GateOptions(ridge=1e-5)
    for _ in range(3):  # a few steps away from the start, so that every term moves
        R = model.posterior(params, X, y)
        new, extras = model.m_step(X, y, R, params, gate, eta=eta)
        dense, steps = _dense_mirror_step(model, X, y, R, params, gate, eta)
        assert extras["gate_newton_steps"] == steps and extras["gate_rejected"] == 0
        for name in ("A", "W", "log_sigma"):
            torch.testing.assert_close(new[name], dense[name], rtol=1e-10, atol=1e-12)
        kl, dq = model.mirror_step_diagnostics(params, new, X, y, R)
        kl_dense = float(model.complete_data_kl(params, new, X).mean())
        dq_dense = float(model.q_value(new, X, y, R) - model.q_value(params, X, y, R))
        assert kl > 1e-6 and dq > 1e-6
        assert kl == pytest.approx(kl_dense, rel=1e-9, abs=1e-14)
        assert dq == pytest.approx(dq_dense, rel=1e-9, abs=1e-14)
        params = new


@pytest.mark.parametrize(("noise", "intercept"), [("known", False), ("shared", True),
                                                   ("per_expert", False)])
def test_chunked_nll_gradient_and_q_oracle_equal_autograd(noise, intercept):
    model = RegressionMoE(RegressionMoE.Params(k=3, noise=noise, intercept=intercept, sigma=0.5),
                          n_features=4)
    params = model.init_params(InitSpec(scale=2.0), torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    X = torch.randn(1500, 4, dtype=torch.float64, generator=g)
    y = torch.randn(1500, dtype=torch.float64, generator=g)
    free = {k: v.clone().requires_grad_(True) for k, v in model.free_params(params).items()}
    chunked = model.nll(model.from_free(free, params), X, y)
    assert chunked.grad_fn is not None and "ChunkedNLL" in type(chunked.grad_fn).__name__
    dense = -model.log_likelihood(model.from_free(free, params), X, y).mean()
    assert float(chunked) == pytest.approx(float(dense), rel=1e-13)
    for a, b in zip(torch.autograd.grad(chunked, list(free.values())),
                    torch.autograd.grad(dense, list(free.values())), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    # Q(. | params) / n and its gradient, at params and at other parameters
    oracle = model.q_oracle(params, X, y)
    R = model.posterior(params, X, y)
    other = {k: v + 0.1 * torch.randn(v.shape, dtype=v.dtype, generator=g)
             for k, v in params.items()}
    other["W"][-1] = 0
    for at in (params, other):
        q, grads = oracle(at, grad=True)
        leaves = {k: v.clone().requires_grad_(True) for k, v in at.items()}
        q_dense = model.q_value(leaves, X, y, R)
        assert q == pytest.approx(float(q_dense), rel=1e-13)
        dense_grads = torch.autograd.grad(q_dense, [leaves[k] for k in ("A", "W", "log_sigma")])
        for name, want in zip(("A", "W", "log_sigma"), dense_grads, strict=True):
            torch.testing.assert_close(grads[name], want, rtol=1e-12, atol=1e-13)
        assert oracle(at, grad=False)[0] == q


def test_gradient_em_with_the_q_oracle_keeps_its_trajectory(monkeypatch):
    from moebench.algorithm import Problem
    from moebench_plugins.algorithms.gradient_em import GradientEM

    model, X, y, init = _problem(n=2000, k=3, d=4)
    runs = []
    for oracle in (True, False):
        if not oracle:
            monkeypatch.setattr(RegressionMoE, "q_oracle", lambda self, *a: None)
        rows = []

        def callback(it, rows=rows):
            rows.append((it.objective, dict(it.extras)))
            return it.iteration < 15

        GradientEM(GradientEM.Params()).fit(
            Problem(model, X, y, torch.Generator().manual_seed(0)),
            {k: v.clone() for k, v in init.items()}, callback)
        runs.append(rows)
    fast, dense = runs
    assert len(fast) == len(dense) == 16
    for (nll_f, ex_f), (nll_d, ex_d) in zip(fast, dense, strict=True):
        assert nll_f == pytest.approx(nll_d, rel=1e-12)
        assert ex_f.keys() == ex_d.keys()
        for key in ex_f:
            assert ex_f[key] == pytest.approx(ex_d[key], rel=1e-9, abs=1e-14)


@needs_native
def test_fused_pass_with_threads_equals_one_thread():
    X, y, A, W, log_sigma = _data(20_001, 4, 10, seed=3)
    chunks = RowChunks(X, y)
    threads = torch.get_num_threads()
    runs = []
    try:
        for t in (1, 3):
            torch.set_num_threads(t)
            R = torch.empty(20_001, 4, dtype=torch.float64)
            runs.append((em_pass(chunks, A, W, log_sigma, R_out=R, expert_stats=True, gate=True),
                         R))
    finally:
        torch.set_num_threads(threads)
    (one, R1), (three, R3) = runs
    assert torch.equal(R1, R3)  # per-sample results do not depend on the split
    _close(three.loglik, one.loglik)
    _close(three.experts.G, one.experts.G)
    _close(three.gate.neg_hessian, one.gate.neg_hessian)
