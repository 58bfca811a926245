"""Shared set-up for the asv benchmarks: a synthetic regression MoE problem on the CPU."""

from __future__ import annotations

import torch

from moebench import InitSpec
from moebench.seeding import torch_generator
from moebench_plugins.datasets.synthetic import SyntheticMoE
from moebench_plugins.models.regression import RegressionMoE


def regression_problem(n: int, k: int, d: int, seed: int = 0):
    """Data, model, truth and a random initialisation (float64, CPU)."""
    gating = "orthogonal" if d >= 2 * k - 1 else "generic"
    dataset = SyntheticMoE(SyntheticMoE.Params(n=n, n_test=10, d=d, k=k, sigma=0.5,
                                               gating=gating))
    data = dataset.load(seed)
    model = RegressionMoE(RegressionMoE.Params(k=k, sigma=0.5), n_features=d)
    X = torch.as_tensor(data.X_train)
    y = torch.as_tensor(data.y_train)
    truth = model.as_tensors(data.truth)
    init = model.init_params(InitSpec(), torch_generator(seed))
    return model, X, y, truth, init
