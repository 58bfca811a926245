"""Timings of the EM kernels of the regression MoE (E-step, M-steps, a whole iteration).

Run offline with the current environment:  ``asv run --python=same --quick``.
"""

from __future__ import annotations

import torch

from moebench.algorithm import Iterate, Problem
from moebench.seeding import torch_generator
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.models.em import GateOptions
from moebench_plugins.models.gate import fit_softmax_gate

from .common import regression_problem


class EMKernels:
    """E-step, expert M-step, gate Newton M-step and a full EM iteration."""

    params = ([10_000, 100_000], [2, 4], [10])
    param_names = ["n", "k", "d"]
    timeout = 300

    def setup(self, n, k, d):
        torch.set_grad_enabled(False)
        self.model, self.X, self.y, self.truth, self.init = regression_problem(n, k, d)
        self.R = self.model.posterior(self.init, self.X, self.y)

    def teardown(self, n, k, d):
        torch.set_grad_enabled(True)

    def time_e_step(self, n, k, d):
        self.model.posterior(self.init, self.X, self.y)

    def time_expert_m_step(self, n, k, d):
        self.model.m_step_experts(self.X, self.y, self.R, self.init)

    def time_gate_newton_step(self, n, k, d):
        fit_softmax_gate(self.X, self.R, self.init["W"], ridge=1e-6, max_steps=1)

    def time_em_iteration(self, n, k, d):
        self.model.m_step(self.X, self.y, self.model.posterior(self.init, self.X, self.y),
                          self.init, GateOptions())

    def peakmem_em_iteration(self, n, k, d):
        self.model.m_step(self.X, self.y, self.model.posterior(self.init, self.X, self.y),
                          self.init, GateOptions())


class EMAccuracy:
    """Parameter error of joint EM after a fixed budget: faster-but-wrong shows up here."""

    params = ([2, 4],)
    param_names = ["k"]
    timeout = 300

    def track_joint_em_parameter_error(self, k):
        model, X, y, truth, init = regression_problem(20_000, k, 10, seed=1)

        def stop_after_50(it: Iterate) -> bool:
            return it.iteration < 50

        params = JointEM().fit(Problem(model, X, y, torch_generator(0)), init, stop_after_50)
        return model.parameter_error(params, truth)

    track_joint_em_parameter_error.unit = "E(A, W)"
