"""Timings of the tensor kernels of tensor-em, and the accuracy of the tensor estimate."""

from __future__ import annotations

import torch

from moebench.seeding import torch_generator
from moebench_plugins.models.spectral import (
    cqt_coefficients,
    estimate_regressors,
    orth_als,
    tensor_power_method,
    whitened_moments,
)

from .common import D_GRID, K_GRID, N_GRID, regression_problem


class TensorKernels:
    """Whitened third moment (one pass after ``T2``), tensor power method, Orth-ALS."""

    params = (N_GRID, K_GRID, D_GRID)
    param_names = ["n", "k", "d"]
    timeout = 600
    number = 1
    repeat = (3, 7, 60.0)

    def setup(self, n, k, d):
        torch.set_grad_enabled(False)
        self.model, self.X, self.y, _, _ = regression_problem(n, k, d)
        self.coeffs = cqt_coefficients("linear", 0.5)
        self.T3 = whitened_moments(self.X[:10_000], self.y[:10_000], k, self.coeffs).T3

    def teardown(self, n, k, d):
        torch.set_grad_enabled(True)

    def time_whitened_third_moment(self, n, k, d):
        whitened_moments(self.X, self.y, k, self.coeffs)

    def peakmem_whitened_third_moment(self, n, k, d):
        whitened_moments(self.X, self.y, k, self.coeffs)

    def time_tensor_power_method(self, n, k, d):
        tensor_power_method(self.T3, k, 10, 100, torch_generator(0))

    def peakmem_tensor_power_method(self, n, k, d):
        tensor_power_method(self.T3, k, 10, 100, torch_generator(0))

    def time_orth_als(self, n, k, d):
        orth_als(self.T3, k, 100, torch_generator(0))

    def peakmem_orth_als(self, n, k, d):
        orth_als(self.T3, k, 100, torch_generator(0))


class TensorAccuracy:
    """Error of the tensor estimate of the regressors (sign- and permutation-free)."""

    params = ([2, 4],)
    param_names = ["k"]
    timeout = 600

    def track_tensor_regressor_error(self, k):
        model, X, y, truth, _ = regression_problem(100_000, k, 10, seed=2)
        with torch.no_grad():
            est = estimate_regressors(X, y, k, cqt_coefficients("linear", 0.5), torch_generator(0))
        A, A_t = est.A, truth["A"] / truth["A"].norm(dim=1, keepdim=True)
        cos = (A @ A_t.T).abs()
        return float((1.0 - cos.max(dim=0).values).max())

    track_tensor_regressor_error.unit = "1 - |cos|"
