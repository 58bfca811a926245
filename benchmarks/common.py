"""Shared set-up for the asv benchmarks: synthetic regression MoE problems on the CPU."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from moebench import InitSpec
from moebench.seeding import torch_generator
from moebench_plugins.datasets.synthetic import SyntheticMoE
from moebench_plugins.models.kernels import DEFAULT_CHUNK_SIZE
from moebench_plugins.models.regression import RegressionMoE

#: The grid of the kernel benchmarks (numpy / scikit-learn asv conventions: ``params`` lists).
N_GRID = [10_000, 100_000, 1_000_000]
K_GRID = [2, 4, 8]
D_GRID = [10, 100]


@functools.lru_cache(maxsize=2)
def regression_problem(n: int, k: int, d: int, seed: int = 0, sigma: float = 0.5,
                       device: str = "cpu", dtype: torch.dtype = torch.float64):
    """Data, model, truth and a random initialisation on ``device`` in ``dtype`` (default:
    float64 on the CPU), cached per process."""
    gating = "orthogonal" if d >= 2 * k - 1 else "generic"
    dataset = SyntheticMoE(SyntheticMoE.Params(n=n, n_test=10, d=d, k=k, sigma=sigma,
                                               gating=gating))
    data = dataset.load(seed)
    model = RegressionMoE(RegressionMoE.Params(k=k, sigma=sigma), n_features=d,
                          device=torch.device(device), dtype=dtype)
    X = torch.as_tensor(data.X_train).to(device, dtype)
    y = torch.as_tensor(data.y_train).to(device, dtype)
    truth = model.as_tensors(data.truth)
    init = {k_: v.to(device, dtype)
            for k_, v in model.init_params(InitSpec(), torch_generator(seed)).items()}
    return model, X, y, truth, init


def over_chunks(f: Callable[[torch.Tensor, torch.Tensor], object], Z: torch.Tensor,
                W: torch.Tensor) -> list:
    """``f(Z_chunk, W_chunk)`` over the column chunks the EM passes use (``DEFAULT_CHUNK_SIZE``)."""
    c = DEFAULT_CHUNK_SIZE
    return [f(Z[:, s : s + c], W[:, s : s + c]) for s in range(0, Z.shape[1], c)]
