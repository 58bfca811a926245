"""The native weighted-sums kernel: equal to its torch reference, its fallbacks, and its use."""

from __future__ import annotations

import platform

import pytest
import torch

from moebench_plugins.models.kernels import ChunkedLabels, RowChunks, em_pass
from moebench_plugins.models.native import Pairs, weighted_sums, weighted_sums_torch
from moebench_plugins.models.native import library as native
from moebench_plugins.models.native import ones as native_ones

needs_native = pytest.mark.skipif(not native.native_available(),
                                  reason="no C compiler: the native kernel cannot be built")


def _chunk(D: int, c: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A ``(D, c)`` view with a row stride larger than ``c`` and an odd column offset."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(D + 2, c + 7, dtype=dtype, generator=g)[1 : D + 1, 3 : c + 3]


@needs_native
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("m,D,c", [(10, 12, 4099), (3, 4, 7), (7, 11, 1000), (1, 1, 9),
                                   (36, 12, 5000), (6, 3, 20000)])
def test_weighted_sums_equal_the_torch_reference(m, D, c, dtype, rtol):
    Z = _chunk(D, c, dtype)
    W = torch.rand(m, c, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for pairs in (Pairs.packed(D), Pairs.packed(D, ones=True), Pairs.linear(D, D)):
        got = weighted_sums(Z, [(W, pairs)])[0]
        ref = weighted_sums_torch(W.double(), Z.double(), pairs)
        torch.testing.assert_close(got.double(), ref, rtol=rtol, atol=rtol * ref.abs().max())


@needs_native
def test_several_terms_row_lists_and_accumulation():
    D, c = 12, 3001
    Z = _chunk(D, c, torch.float64)
    g = torch.Generator().manual_seed(2)
    R, H, L = (torch.rand(r, c, dtype=torch.float64, generator=g) for r in (4, 6, 5))
    terms = [(L, Pairs.linear(11, D)), ([R, H], Pairs.packed(D, ones=True))]
    first = weighted_sums(Z, terms)
    assert [tuple(t.shape) for t in first] == [(5, 12), (10, 79)]
    torch.testing.assert_close(first[0], weighted_sums_torch(L, Z, Pairs.linear(11, D)))
    torch.testing.assert_close(first[1], weighted_sums_torch(torch.cat([R, H]), Z,
                                                             Pairs.packed(D, ones=True)))
    # sums are added to the accumulators
    again = weighted_sums(Z, terms, out=[t.clone() for t in first])
    torch.testing.assert_close(again[1], 2 * first[1])
    # the (D, D) pair of the row of ones gives the plain sums of the weights
    torch.testing.assert_close(first[1][:, -1], torch.cat([R, H]).sum(dim=1))


@needs_native
def test_results_are_reproducible_bit_for_bit():
    Z = _chunk(12, 70001, torch.float64)
    W = torch.rand(10, 70001, dtype=torch.float64)
    a = weighted_sums(Z, [(W, Pairs.packed(12, ones=True))])[0]
    b = weighted_sums(Z, [(W, Pairs.packed(12, ones=True))])[0]
    assert torch.equal(a, b)


def test_bad_terms_are_rejected_with_the_reason():
    Z = torch.zeros(3, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="term 0: weights of shape"):
        weighted_sums(Z, [(torch.zeros(2, 9, dtype=torch.float64), Pairs.packed(3))])
    W = torch.zeros(2, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="pairs index rows 0 to 4; Z has 3 rows"):
        weighted_sums(Z, [(W, Pairs.packed(5))])
    with pytest.raises(ValueError, match="pairs index rows -1 to 0"):
        weighted_sums(Z, [(W, Pairs((-1,), (0,)))])
    with pytest.raises(ValueError, match=r"out has shape \(2, 3\), the sums \(2, 6\)"):
        weighted_sums(Z, [(W, Pairs.packed(3))], out=[torch.zeros(2, 3, dtype=torch.float64)])


def test_never_mode_and_unknown_values(monkeypatch):
    monkeypatch.setenv("MOEBENCH_NATIVE", "never")
    assert not native.native_available()
    Z = _chunk(5, 100, torch.float64)
    W = torch.rand(3, 100, dtype=torch.float64)
    torch.testing.assert_close(weighted_sums(Z, [(W, Pairs.packed(5))])[0],
                               weighted_sums_torch(W, Z, Pairs.packed(5)))
    monkeypatch.setenv("MOEBENCH_NATIVE", "sometimes")
    with pytest.raises(ValueError, match="MOEBENCH_NATIVE='sometimes': use auto or never"):
        native.native_mode()


def test_a_missing_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    Z = _chunk(4, 50, torch.float64)
    W = torch.rand(2, 50, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="native .* kernel is unavailable"):
        got = weighted_sums(Z, [(W, Pairs.packed(4))])[0]
    torch.testing.assert_close(got, weighted_sums_torch(W, Z, Pairs.packed(4)))
    assert not native.native_available()
    assert not list(tmp_path.glob("moebench-native-*"))  # not mistaken for an unwritable cache


@needs_native
def test_the_kernel_is_built_into_the_cache_once(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path))
    assert native.native_available()
    built = list((tmp_path / "native").glob("moebench_sums_*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_state", {})
    assert native.native_available()
    assert built[0].stat().st_mtime_ns == mtime


@needs_native
@pytest.mark.parametrize("intercept", [True, False])
def test_em_pass_statistics_do_not_depend_on_the_native_kernel(monkeypatch, intercept):
    g = torch.Generator().manual_seed(3)
    n, d, k = 5003, 6, 3
    X = torch.randn(n, d, dtype=torch.float64, generator=g)
    y = torch.randn(n, dtype=torch.float64, generator=g)
    dd = d + int(intercept)
    A = torch.randn(k, dd, dtype=torch.float64, generator=g)
    W = torch.cat([torch.randn(k - 1, dd, dtype=torch.float64, generator=g),
                   torch.zeros(1, dd, dtype=torch.float64)])
    log_sigma = torch.zeros(k, dtype=torch.float64)
    chunks = RowChunks(X, y, chunk_size=1000, intercept=intercept)

    def stats():
        R = torch.empty(n, k, dtype=torch.float64)
        st = em_pass(chunks, A, W, log_sigma, R_out=R, expert_stats=True, gate=True)
        return st, R

    fast, R_fast = stats()
    monkeypatch.setenv("MOEBENCH_NATIVE", "never")
    ref, R_ref = stats()
    torch.testing.assert_close(R_fast, R_ref, rtol=1e-12, atol=1e-14)
    assert fast.loglik == pytest.approx(ref.loglik, rel=1e-12)
    for name in ("mass", "G", "b", "yy"):
        torch.testing.assert_close(getattr(fast.experts, name), getattr(ref.experts, name),
                                   rtol=1e-11, atol=1e-9)
    assert fast.gate.q == pytest.approx(ref.gate.q, rel=1e-12)
    torch.testing.assert_close(fast.gate.grad, ref.gate.grad, rtol=1e-11, atol=1e-9)
    torch.testing.assert_close(fast.gate.neg_hessian, ref.gate.neg_hessian, rtol=1e-11, atol=1e-9)


def test_chunked_labels_keep_the_blocks_and_read_across_them():
    n, k = 10, 2
    full = torch.arange(n * k, dtype=torch.float64).reshape(k, n)
    labels = ChunkedLabels(n)
    for s in range(0, n, 4):
        labels.put(s, full[:, s : s + 4])
    assert labels(0, 4).data_ptr() == full.data_ptr()  # a stored block, not a copy
    torch.testing.assert_close(labels(2, 9), full[:, 2:9])
    torch.testing.assert_close(labels.to_tensor(), full.T)
    with pytest.raises(ValueError, match="increasing, non-overlapping"):
        labels.put(6, full[:, 6:8])
    short = ChunkedLabels(n)
    short.put(0, full[:, :4])
    with pytest.raises(IndexError, match="rows 4:6 were not stored"):
        short(2, 6)


def test_fused_em_step_keeps_the_posterior_blocks(monkeypatch):
    """em_step's gate passes read the E-step's blocks (ChunkedLabels) and match m_step."""
    from moebench.em import GateOptions
    from moebench.model import InitSpec
    from moebench.seeding import torch_generator
    from moebench_plugins.models.regression import RegressionMoE

    g = torch.Generator().manual_seed(4)
    n, d, k = 3000, 4, 3
    X = torch.randn(n, d, dtype=torch.float64, generator=g)
    y = torch.randn(n, dtype=torch.float64, generator=g)
    model = RegressionMoE(RegressionMoE.Params(k=k, chunk_size=700), n_features=d)
    params = model.init_params(InitSpec(), torch_generator(4))
    puts = []
    original = ChunkedLabels.put
    monkeypatch.setattr(ChunkedLabels, "put",
                        lambda self, s, b: (puts.append(s), original(self, s, b))[1])
    new, _ = model.em_step(X, y, params, GateOptions())
    assert puts == list(range(0, n, 700))
    ref, _ = model.m_step(X, y, model.posterior(params, X, y), params, GateOptions())
    for name in ("A", "W", "log_sigma"):
        torch.testing.assert_close(new[name], ref[name], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("pairs", [Pairs.packed(5), Pairs.packed(4, ones=True), Pairs.linear(3, 4),
                                   Pairs((4,), (4,)), Pairs((0, 2, 1, 1), (3, 3, 0, 1))])
def test_torch_reference_runs_cover_every_pair(pairs):
    Z = _chunk(4 if max(pairs.a + pairs.b) <= 4 else 5, 30, torch.float64)
    Zx = torch.cat([Z, torch.ones(1, 30, dtype=torch.float64)])
    W = torch.rand(2, 30, dtype=torch.float64)
    expected = W @ torch.stack([Zx[a] * Zx[b] for a, b in zip(pairs.a, pairs.b, strict=True)]).T
    torch.testing.assert_close(weighted_sums_torch(W, Z, pairs), expected)


@needs_native
def test_an_unwritable_cache_builds_in_a_private_temporary_folder(monkeypatch, tmp_path):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("MOEBENCH_CACHE", str(not_a_folder))
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(native, "_state", {})
    assert native.native_available()
    private = next(tmp_path.glob("moebench-native-*"))
    assert private.stat().st_mode & 0o077 == 0
    assert len(list(private.glob("moebench_sums_*.so"))) == 1


@needs_native
def test_cc_may_carry_arguments(monkeypatch, tmp_path):
    import shutil

    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", f"{shutil.which('cc') or shutil.which('gcc')} -g0")
    assert native.native_available()


@needs_native
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 ISA levels")
@pytest.mark.parametrize("march", ["x86-64", "x86-64-v3"])
def test_builds_for_narrower_vector_units_give_the_same_sums(monkeypatch, tmp_path, march):
    """16-register machines (SSE, AVX2) get 16/32-byte vectors and 3 x 3 tiles."""
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_FLAG_SETS", ([f"-march={march}", "-fopenmp"],))
    assert native.native_available()
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        Z = _chunk(12, 5003, dtype)
        W = torch.rand(10, 5003, dtype=dtype, generator=torch.Generator().manual_seed(5))
        pairs = Pairs.packed(12, ones=True)
        got = weighted_sums(Z, [(W, pairs), (W[:3], Pairs.linear(11, 12))])
        for (w, p), g in zip([(W, pairs), (W[:3], Pairs.linear(11, 12))], got, strict=True):
            ref = weighted_sums_torch(w.double(), Z.double(), p)
            torch.testing.assert_close(g.double(), ref, rtol=rtol, atol=rtol * ref.abs().max())


@needs_native
def test_concurrent_calls_with_growing_chunks_are_safe():
    """Calls from several threads (the GIL is released in the kernel) share the ones row."""
    import threading

    errors = []

    def work(sizes):
        try:
            for c in sizes:
                Z = _chunk(4, c, torch.float64, seed=c)
                W = torch.rand(2, c, dtype=torch.float64)
                got = weighted_sums(Z, [(W, Pairs.linear(4, 4))])[0]
                torch.testing.assert_close(got, weighted_sums_torch(W, Z, Pairs.linear(4, 4)))
        except Exception as exc:  # reported below
            errors.append(exc)

    native_ones._ONES.clear()
    threads = [threading.Thread(target=work, args=([70_000] * 30,)),
               threading.Thread(target=work, args=(range(70_000, 400_000, 11_000),))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_chunked_labels_reject_rows_outside_and_return_empty_ranges():
    labels = ChunkedLabels(5)
    with pytest.raises(ValueError, match="rows 3:7 lie outside 0:5"):
        labels.put(3, torch.zeros(2, 4))
    labels.put(0, torch.ones(2, 5))
    assert labels(2, 2).shape == (2, 0)


def test_native_layout_stays_within_its_scratch_budget():
    from moebench_plugins.models.kernels import KernelSpec
    from moebench_plugins.models.kernels.grams import _NATIVE_MAX_SUMS, _packed_layout

    chunks = RowChunks(torch.zeros(10, 3, dtype=torch.float64), None)
    small = KernelSpec(k=4, n_features=101, expert_stats=True, gate=True, gate_system=True)
    large = KernelSpec(k=8, n_features=300, expert_stats=True, gate=True, gate_system=True)
    assert 10 * 103 * 102 // 2 <= _NATIVE_MAX_SUMS < 36 * 302 * 301 // 2
    if native.native_available():
        assert _packed_layout(small, chunks)
    assert not _packed_layout(large, chunks)


@needs_native
def test_the_library_is_reused_under_a_group_writable_umask(monkeypatch, tmp_path):
    import os

    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path))
    old = os.umask(0o002)
    try:
        monkeypatch.setattr(native, "_state", {})
        assert native.native_available()
        lib = next((tmp_path / "native").glob("moebench_sums_*.so"))
        inode = lib.stat().st_ino
        monkeypatch.setattr(native, "_state", {})
        assert native.native_available()
        assert lib.stat().st_ino == inode  # loaded again, not rebuilt
    finally:
        os.umask(old)


@needs_native
def test_a_library_that_builds_but_does_not_load_tries_the_next_flags(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path))
    # the first flag set links against a symbol no library provides: it compiles, never loads
    monkeypatch.setattr(native, "_FLAG_SETS", (["-Wl,--undefined=moebench_no_such_symbol",
                                                "-Dmemset=moebench_no_such_symbol"], []))
    assert native.native_available()
    assert not list(tmp_path.glob("moebench-native-*"))
