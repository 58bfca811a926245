"""EM and GD on data streamed from a memory-mapped NPZ file, and chunked data validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moebench import InitSpec, ModelSpec
from moebench.dataset import Data
from moebench.em import GateOptions
from moebench.errors import DataError
from moebench_plugins.datasets.arrays import open_npz_memmap
from moebench_plugins.datasets.synthetic import SyntheticMoE
from moebench_plugins.models.kernels import chunked_nll_grad
from moebench_plugins.models.regression import RegressionMoE

N = 100_000


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """An uncompressed NPZ (so its members can be memory-mapped) of a 3-expert problem."""
    data = SyntheticMoE(SyntheticMoE.Params(n=N, n_test=10, d=6, k=3, sigma=0.3)).load(0)
    path = tmp_path_factory.mktemp("stream") / "moe.npz"
    np.savez(path, X=data.X_train, y=data.y_train)
    return path, data


def test_em_streamed_from_a_memory_map_equals_in_memory_em(npz):
    path, data = npz
    arrays = open_npz_memmap(path)
    X_map, y_map = arrays["X"], arrays["y"]
    assert isinstance(X_map, np.memmap)
    np.testing.assert_array_equal(X_map, data.X_train)
    model = RegressionMoE(RegressionMoE.Params(k=3, noise="shared", chunk_size=8192),
                          n_features=6)
    init = model.init_params(InitSpec(), torch.Generator().manual_seed(1))
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    streamed, in_memory = dict(init), dict(init)
    nlls = []
    for _ in range(4):
        streamed, ext = model.em_step(X_map, y_map, streamed, GateOptions(),
                                      keep_responsibilities=False)
        in_memory, ref = model.em_step(X, y, in_memory, GateOptions())
        assert ext["nll"] == pytest.approx(ref["nll"], rel=1e-12)
        nlls.append(ext["nll"])
    for key in streamed:
        torch.testing.assert_close(streamed[key], in_memory[key], rtol=1e-9, atol=1e-11)
    assert all(b <= a + 1e-10 * abs(a) for a, b in zip(nlls, nlls[1:], strict=False))


def test_gd_gradient_streamed_from_a_memory_map(npz):
    path, data = npz
    arrays = open_npz_memmap(path)
    model = RegressionMoE(RegressionMoE.Params(k=3, noise="per_expert"), n_features=6)
    params = model.init_params(InitSpec(), torch.Generator().manual_seed(2))
    nll, grads = chunked_nll_grad(model, params, arrays["X"], arrays["y"], chunk_size=30_000)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    full = model.nll(leaves, torch.as_tensor(data.X_train), torch.as_tensor(data.y_train))
    full.backward()
    assert nll == pytest.approx(float(full.detach()), rel=1e-12)
    for key, leaf in leaves.items():
        torch.testing.assert_close(grads[key], leaf.grad, rtol=1e-10, atol=1e-13)


def test_data_validation_accepts_memory_maps_and_counts_bad_values_by_block(npz, tmp_path,
                                                                          monkeypatch):
    path, data = npz
    arrays = open_npz_memmap(path)
    spec = ModelSpec("regression-moe", {"k": 3})
    Data(arrays["X"], arrays["y"], data.X_test, data.y_test, "regression", spec)
    import moebench.dataset as dataset_module

    monkeypatch.setattr(dataset_module, "_VALIDATE_ROWS", 1000)
    X = np.array(arrays["X"])
    X[[5, 2500, 99_999], 1] = np.nan
    X[7, 0] = np.inf
    with pytest.raises(DataError, match="X_train contains 4 NaN or infinite values"):
        Data(X, np.asarray(arrays["y"]), data.X_test, data.y_test, "regression", spec)


def test_compressed_npz_cannot_be_memory_mapped(tmp_path):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, X=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="compressed"):
        open_npz_memmap(path)
