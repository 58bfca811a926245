"""The fused chunked kernels: statistics, chunk invariance, fused EM step, devices and dtypes."""

from __future__ import annotations

import functools
import gc
import math
import shutil
import weakref

import numpy as np
import pytest
import torch

from moebench import InitSpec
from moebench.em import GateOptions
from moebench_plugins.devices.cuda import CUDA
from moebench_plugins.models import kernels
from moebench_plugins.models.caching import data_cache
from moebench_plugins.models.gate import fit_softmax_gate, gate_objective
from moebench_plugins.models.kernels import (
    RowChunks,
    cached_row_chunks,
    compiling,
    em_pass,
    fused_pass,
    gate_pass,
    posterior_labels,
    weighted_sse_pass,
)
from moebench_plugins.models.kernels import chunks as kernel_chunks
from moebench_plugins.models.regression import RegressionMoE

#: The CUDA path is the same code; it runs here on the CPU and on the GPU when there is one.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def problem(n=600, k=3, d=4, seed=0, device="cpu", dtype=torch.float64, **kw):
    model = RegressionMoE(RegressionMoE.Params(k=k, noise="per_expert", **kw), n_features=d,
                          device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    params = {key: v.to(device, dtype) for key, v in
              model.init_params(InitSpec(scale=2.0), gen).items()}
    params["log_sigma"] = torch.linspace(-0.5, 0.3, k, dtype=dtype, device=device)
    rng = np.random.default_rng(seed)
    X = torch.as_tensor(rng.standard_normal((n, d)), dtype=dtype, device=device)
    y = torch.as_tensor(rng.standard_normal(n), dtype=dtype, device=device)
    return model, params, X, y


def dense_gate_system(F, R, W):
    """Gradient of sum R log softmax and the negated Hessian by autograd (free rows)."""
    k, d = W.shape
    V = W[:-1].clone().requires_grad_(True)

    def q(v):
        Wf = torch.cat([v, W[-1:]], dim=0)
        return gate_objective(F, R, Wf, 0.0) * F.shape[0]

    grad = torch.autograd.grad(q(V), V)[0]
    H = torch.autograd.functional.hessian(q, V.detach()).reshape((k - 1) * d, (k - 1) * d)
    return float(q(V.detach())), grad, -H


@pytest.mark.parametrize("native", ["auto", "never"])
@pytest.mark.parametrize(("k", "d", "intercept"),
                         [(3, 4, False), (2, 12, True), (4, 3, True), (2, 70, True),
                          (6, 120, False), (3, 300, True)])
def test_em_pass_statistics_match_dense_formulas(k, d, intercept, native, monkeypatch):
    # Without the native kernel (2, 12), (2, 70) and (6, 120) use the stacked Gram layout, the
    # others the packed products; with it every case but (6, 120) (beyond its scratch budget)
    # uses the packed products. (3, 300) takes the stacked layout's block-triangular Grams.
    monkeypatch.setenv("MOEBENCH_NATIVE", native)
    model, params, X, y = problem(k=k, d=d, intercept=intercept)
    R = model.posterior(params, X, y)
    F = model.features(X)
    st = em_pass(model.chunks(X, y), params["A"], params["W"], params["log_sigma"], labels=R,
                 expert_stats=True, gate=True)
    ex = st.experts
    for i in range(k):
        r = R[:, i]
        torch.testing.assert_close(ex.G[i], F.T @ (r[:, None] * F))
        torch.testing.assert_close(ex.b[i], F.T @ (r * y))
        torch.testing.assert_close(ex.yy[i], (r * y * y).sum())
    torch.testing.assert_close(ex.mass, R.sum(dim=0))
    torch.testing.assert_close(ex.sse(params["A"]), (R * (y[:, None] - F @ params["A"].T) ** 2)
                               .sum(dim=0))
    torch.testing.assert_close(weighted_sse_pass(model.chunks(X, y), params["A"], R),
                               ex.sse(params["A"]))
    q, grad, negH = dense_gate_system(F, R, params["W"])
    assert st.gate.q == pytest.approx(q, rel=1e-12)
    torch.testing.assert_close(st.gate.grad, grad)
    torch.testing.assert_close(st.gate.neg_hessian, negH)


def test_e_step_kernel_matches_dense_and_ignores_chunking():
    model, params, X, y = problem(n=1000, k=4, d=5, intercept=True, activation="sigmoid")
    joint = model.joint_log_probs(params, X, y)
    for chunk in (1, 7, 1000, 4096):
        R = torch.empty(1000, 4, dtype=torch.float64)
        ll = torch.empty(1000, dtype=torch.float64)
        st = em_pass(RowChunks(X, y, chunk_size=chunk, intercept=True), params["A"],
                     params["W"], params["log_sigma"], activation="sigmoid", R_out=R,
                     loglik_out=ll)
        torch.testing.assert_close(R, torch.softmax(joint, dim=1), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(ll, torch.logsumexp(joint, dim=1), rtol=1e-12, atol=1e-12)
        assert st.loglik == pytest.approx(float(ll.sum()), rel=1e-12)
    labels = posterior_labels(params["A"], params["W"], params["log_sigma"], "sigmoid")
    Z = torch.cat([model.features(X).T, y[None]], dim=0)
    torch.testing.assert_close(labels(0, 1000, Z), torch.softmax(joint, dim=1).T)


def test_fused_em_step_equals_posterior_then_m_step():
    for noise, radius in (("per_expert", None), ("shared", 0.8), ("known", None)):
        model = RegressionMoE(RegressionMoE.Params(k=3, noise=noise, chunk_size=97), n_features=4)
        _, params, X, y = problem(n=800, k=3, d=4)
        gate = GateOptions(ridge=1e-4, radius=radius)
        a, ea = model.em_step(X, y, params, gate)
        b, eb = model.m_step(X, y, model.posterior(params, X, y), params, gate)
        c, _ = model.em_step(X, y, params, gate, keep_responsibilities=False)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-9, atol=1e-11)
            torch.testing.assert_close(a[key], c[key], rtol=1e-9, atol=1e-11)
        assert ea["nll"] == pytest.approx(float(model.nll(params, X, y)), rel=1e-12)
        assert ea["gate_newton_steps"] == eb["gate_newton_steps"]


def test_gate_fit_does_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.standard_normal((500, 3)))
    R = torch.softmax(torch.as_tensor(rng.standard_normal((500, 4))) + X[:, :1], dim=1)
    W0 = torch.zeros(4, 3, dtype=torch.float64)
    Wa, ia = fit_softmax_gate(X, R, W0, ridge=1e-3, chunk_size=11)
    Wb, ib = fit_softmax_gate(X, R, W0, ridge=1e-3, chunk_size=100_000)
    torch.testing.assert_close(Wa, Wb, rtol=1e-10, atol=1e-12)
    assert ia["converged"] and ib["converged"]
    st = gate_pass(RowChunks(X, None, chunk_size=64), R, Wa, system=False)
    assert st.neg_hessian is None
    assert st.q / 500 - 0.5e-3 * float(Wa.square().sum()) == pytest.approx(ia["J"], rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_are_device_and_dtype_generic(device, dtype):
    """The code path of the ``cuda`` device: float32 and float64 tensors on ``device``."""
    model, params, X, y = problem(n=2000, k=3, d=5, device=device, dtype=dtype)
    ref_model, ref_params, Xr, yr = problem(n=2000, k=3, d=5)
    new, extras = model.em_step(X, y, params, GateOptions())
    ref, _ = ref_model.em_step(Xr, yr, ref_params, GateOptions())
    tol = 1e-3 if dtype == torch.float32 else 1e-10
    for key in new:
        assert new[key].device.type == device and new[key].dtype == dtype
        torch.testing.assert_close(new[key].cpu().double(), ref[key], rtol=tol, atol=tol)
    assert math.isfinite(extras["nll"])


def test_cuda_device_plugin_says_why_it_is_unavailable():
    dev = CUDA()
    if dev.is_available():
        pytest.skip("a GPU is present: the kernels ran on it in the test above")
    assert dev.describe() == "cuda (unavailable)"
    reason = dev.unavailable_reason()
    assert "torch.cuda.is_available() is False" in reason and "--device cpu" in reason


def _fresh_compile_state(monkeypatch):
    fresh = functools.cache(compiling._compiled_kernel.__wrapped__)
    monkeypatch.setattr(compiling, "_compiled_kernel", fresh)
    monkeypatch.setattr(compiling, "_compile_error", [])


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_kernels_give_the_eager_em_step(monkeypatch):
    """MOEBENCH_COMPILE=always runs the same kernels through torch.compile (one code path)."""
    _fresh_compile_state(monkeypatch)
    model = RegressionMoE(RegressionMoE.Params(k=3, noise="per_expert", chunk_size=300),
                          n_features=4)
    _, params, X, y = problem(n=1000, k=3, d=4)  # 1000 = 3 full chunks and a remainder
    gate = GateOptions(ridge=1e-4, max_steps=1)
    monkeypatch.setenv("MOEBENCH_COMPILE", "never")
    eager, e_info = model.em_step(X, y, params, gate)
    monkeypatch.setenv("MOEBENCH_COMPILE", "always")
    compiled, c_info = model.em_step(X, y, params, gate)
    assert not compiling._compile_error, compiling._compile_error
    # the fused pass and the gate's trial evaluation
    assert compiling._compiled_kernel.cache_info().currsize == 2
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-10, atol=1e-12)
    assert c_info["nll"] == pytest.approx(e_info["nll"], rel=1e-12)


def test_a_failing_compiler_falls_back_to_the_eager_kernels(monkeypatch):
    _fresh_compile_state(monkeypatch)

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(fused_pass, "FUSED", False)  # the eager torch kernels on both sides
    monkeypatch.setenv("MOEBENCH_COMPILE", "always")
    model, params, X, y = problem(n=500, k=3, d=4)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        ll = model.nll(params, X, y)
    monkeypatch.setenv("MOEBENCH_COMPILE", "never")
    assert float(ll) == float(model.nll(params, X, y))


def test_compile_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("MOEBENCH_COMPILE", "sometimes")
    with pytest.raises(ValueError, match="MOEBENCH_COMPILE='sometimes': use auto, always or never"):
        kernels.compile_mode()
    monkeypatch.setenv("MOEBENCH_COMPILE", "0")
    assert kernels.compile_mode() == "never"


def test_transposed_copy_is_reused_and_invalidated():
    _, _, X, y = problem(n=300, k=2, d=3)
    a = cached_row_chunks(X, y, chunk_size=64, intercept=True)
    assert cached_row_chunks(X, y, chunk_size=64, intercept=True) is a
    assert a.X is None  # the cache holds the transposed copy only, not the caller's data
    Z = torch.cat([Zc for _, _, Zc in a], dim=1)
    torch.testing.assert_close(Z, torch.cat([X.T, torch.ones(1, 300, dtype=X.dtype), y[None]]))
    X.mul_(2.0)  # modified in place: rebuilt
    b = cached_row_chunks(X, y, chunk_size=64, intercept=True)
    assert b is not a
    torch.testing.assert_close(next(iter(b))[2][:3], X[:64].T)
    assert cached_row_chunks(X, None, chunk_size=64, intercept=True) is not b
    copies = data_cache(X)[kernel_chunks.TRANSPOSED_COPIES]
    assert len(copies) == 2  # (X, y) and (X, None)
    entries = [weakref.ref(chunks) for _, _, chunks in copies.values()]
    del X, a, b, copies
    gc.collect()
    assert all(ref() is None for ref in entries)  # both entries of X are dropped with it
