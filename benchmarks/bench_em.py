"""Timings and peak memory of the EM kernels of the regression MoE, and accuracy tracking.

Every kernel is one implementation (:mod:`moebench_plugins.models.kernels`) shared by all
algorithms and devices. Run offline with the current environment, e.g.
``asv run --python=same --quick --bench EMKernels``.
"""

from __future__ import annotations

import torch

from moebench.algorithm import Iterate, Problem
from moebench.em import GateOptions
from moebench.seeding import torch_generator
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.algorithms.online_em import OnlineEM
from moebench_plugins.models.gate import fit_softmax_gate
from moebench_plugins.models.native import (
    Pairs,
    native_available,
    weighted_sums,
    weighted_sums_torch,
)

from .common import D_GRID, K_GRID, N_GRID, over_chunks, regression_problem


class EMKernels:
    """E-step, expert M-step, one gate Newton step, and a fused EM iteration."""

    params = (N_GRID, K_GRID, D_GRID)
    param_names = ["n", "k", "d"]
    timeout = 600
    number = 1
    repeat = (3, 7, 60.0)

    def setup(self, n, k, d):
        torch.set_grad_enabled(False)
        self.model, self.X, self.y, self.truth, self.init = regression_problem(n, k, d)
        self.R = self.model.posterior(self.init, self.X, self.y)

    def teardown(self, n, k, d):
        torch.set_grad_enabled(True)

    def time_e_step(self, n, k, d):
        self.model.posterior(self.init, self.X, self.y)

    def peakmem_e_step(self, n, k, d):
        self.model.posterior(self.init, self.X, self.y)

    def time_expert_m_step(self, n, k, d):
        self.model.m_step_experts(self.X, self.y, self.R, self.init)

    def peakmem_expert_m_step(self, n, k, d):
        self.model.m_step_experts(self.X, self.y, self.R, self.init)

    def time_gate_newton_step(self, n, k, d):
        fit_softmax_gate(self.X, self.R, self.init["W"], ridge=1e-6, max_steps=1)

    def peakmem_gate_newton_step(self, n, k, d):
        fit_softmax_gate(self.X, self.R, self.init["W"], ridge=1e-6, max_steps=1)

    def time_em_iteration(self, n, k, d):
        """Fused pass (E-step + every M-step statistic) and one gate Newton step."""
        self.model.em_step(self.X, self.y, self.init, GateOptions(max_steps=1))

    def peakmem_em_iteration(self, n, k, d):
        self.model.em_step(self.X, self.y, self.init, GateOptions(max_steps=1))

    def time_em_iteration_unfused(self, n, k, d):
        """What ``run_em`` does per iteration: posterior, M-step (gate to convergence), NLL."""
        R = self.model.posterior(self.init, self.X, self.y)
        new, _ = self.model.m_step(self.X, self.y, R, self.init, GateOptions())
        self.model.nll(new, self.X, self.y)


class EMAccuracy:
    """Parameter error after a fixed budget: a change that is faster but wrong shows up here."""

    params = ([2, 4],)
    param_names = ["k"]
    timeout = 600

    def track_joint_em_parameter_error(self, k):
        model, X, y, truth, init = regression_problem(20_000, k, 10, seed=1)

        def stop_after_50(it: Iterate) -> bool:
            return it.iteration < 50

        params = JointEM().fit(Problem(model, X, y, torch_generator(0)), init, stop_after_50)
        return model.parameter_error(params, truth)

    track_joint_em_parameter_error.unit = "E(A, W)"

    def track_fused_em_parameter_error(self, k):
        model, X, y, truth, init = regression_problem(20_000, k, 10, seed=1)
        params = init
        with torch.no_grad():
            for _ in range(50):
                params, _ = model.em_step(X, y, params, GateOptions())
        return model.parameter_error(params, truth)

    track_fused_em_parameter_error.unit = "E(A, W)"

    def track_fused_vs_reference_m_step(self, k):
        """Max difference between the fused step and posterior + M-step (rounding only)."""
        model, X, y, truth, init = regression_problem(20_000, k, 10, seed=1)
        with torch.no_grad():
            a, _ = model.em_step(X, y, init, GateOptions())
            b, _ = model.m_step(X, y, model.posterior(init, X, y), init, GateOptions())
        return max(float((a[key] - b[key]).abs().max()) for key in a)

    track_fused_vs_reference_m_step.unit = "max |diff|"


class WeightedSums:
    """The native weighted-Gram kernel against its torch expression (same sums, one run).

    ``m = k + k (k - 1) / 2`` weight rows (responsibilities and gate Hessian weights) against
    the ``(d + 2)(d + 3) / 2 + 1`` products of ``[f; 1; y]`` and the row of ones, in the chunks
    the EM passes use. Skipped where the native kernel does not apply (``d + 2 > 64``, no C
    compiler).
    """

    params = (N_GRID, K_GRID, D_GRID)
    param_names = ["n", "k", "d"]
    timeout = 600
    number = 1
    repeat = (3, 7, 60.0)

    def setup(self, n, k, d):
        if d + 2 > 64 or not native_available():
            raise NotImplementedError("the native kernel does not apply here")
        g = torch_generator(0)
        self.Z = torch.randn(d + 2, n, dtype=torch.float64, generator=g)
        self.W = torch.rand(k + k * (k - 1) // 2, n, dtype=torch.float64, generator=g)
        self.pairs = Pairs.packed(d + 2, ones=True)

    def _run(self, f):
        return over_chunks(f, self.Z, self.W)

    def time_native(self, n, k, d):
        self._run(lambda Z, W: weighted_sums(Z, [(W, self.pairs)]))

    def peakmem_native(self, n, k, d):
        self._run(lambda Z, W: weighted_sums(Z, [(W, self.pairs)]))

    def time_torch_expression(self, n, k, d):
        self._run(lambda Z, W: weighted_sums_torch(W, Z, self.pairs))

    def track_native_relative_error(self, n, k, d):
        fast = sum(self._run(lambda Z, W: weighted_sums(Z, [(W, self.pairs)])[0]))
        ref = sum(self._run(lambda Z, W: weighted_sums_torch(W, Z, self.pairs)))
        return float((fast - ref).abs().max() / ref.abs().max())

    track_native_relative_error.unit = "max |diff| / max |sum|"


class OnlineEMPass:
    """One pass of online-em (mini-batches of 5,000 rows, in file order) against one iteration
    of joint EM on the same in-memory data: compare ``time_online_em_pass`` with
    ``time_joint_em_iteration`` of the same ``n`` (issue 22 asks for at most 2x; the 10^7-row
    out-of-core figure is ``python -m measurements.stream_online_em``)."""

    params = ([100_000, 1_000_000],)
    param_names = ["n"]
    timeout = 600
    number = 1
    repeat = (3, 7, 60.0)

    def setup(self, n):
        torch.set_grad_enabled(False)
        self.model, self.X, self.y, _, self.init = regression_problem(n, 4, 10)
        self.X_np, self.y_np = self.X.numpy(), self.y.numpy()

    def teardown(self, n):
        torch.set_grad_enabled(True)

    def _fit(self, algorithm, X, y, iterations):
        algorithm.fit(Problem(self.model, X, y, torch_generator(0)), self.init,
                      lambda it: it.iteration < iterations)

    def time_online_em_pass(self, n):
        """A pass over numpy rows, as from an out-of-core reader."""
        self._fit(OnlineEM(OnlineEM.Params(shuffle=False)), self.X_np, self.y_np, 1)

    def peakmem_online_em_pass(self, n):
        self._fit(OnlineEM(OnlineEM.Params(shuffle=False)), self.X_np, self.y_np, 1)

    def time_joint_em_iteration(self, n):
        """Iteration 0's E-step, then one EM iteration (fused pass and gate Newton steps)."""
        self._fit(JointEM(), self.X, self.y, 1)
