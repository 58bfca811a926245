"""``mle-from-truth``: joint EM from the ground truth stops at a maximum of the likelihood (the
MLE nearest the truth) that joint EM from the suite's random start does not beat; without a
truth it declines the problem (the cell is skipped)."""

from __future__ import annotations

import pytest
import torch

from moebench import InitSpec, Iterate, Problem, plugins
from moebench.device import Device
from moebench.errors import UnsupportedProblem
from moebench.seeding import torch_generator
from moebench.testing.harness import build_model, truth_for
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.algorithms.oracle import MLEFromTruth

PROBLEMS = {
    "symmoline": ("symmoline", {"n": 400, "n_test": 10, "d": 4, "r": 2.0}),
    "synthetic-moe": ("synthetic-moe", {"n": 400, "n_test": 10, "d": 4, "k": 2, "sigma": 0.3}),
}


def _problem(name: str, seed: int = 0, with_truth: bool = True) -> Problem:
    dataset, params = PROBLEMS[name]
    cls = plugins.get("datasets", dataset)
    data = cls(cls.Params.model_validate(params)).load(seed)
    device = plugins.get("devices", "cpu")()
    assert isinstance(device, Device)
    model = build_model(data, None, device, torch.float64)
    return Problem(model, device.tensor(data.X_train, torch.float64),
                   device.tensor(data.y_train, torch.float64), torch_generator(seed),
                   init_truth=truth_for(model, data) if with_truth else None)


def _fit(algorithm, problem: Problem, init) -> tuple[dict, list[Iterate]]:
    log: list[Iterate] = []

    def callback(it: Iterate) -> bool:
        log.append(it)
        return it.iteration < 2000

    final = algorithm.fit(problem, init, callback)
    assert log[-1].iteration < 2000, "did not converge by its own criterion"
    return final, log


@pytest.fixture(scope="module", params=list(PROBLEMS))
def fitted(request):
    problem = _problem(request.param)
    random_init = problem.model.init_params(InitSpec(), torch_generator(1))
    oracle, oracle_log = _fit(MLEFromTruth(), problem, random_init)
    em, em_log = _fit(JointEM(), problem, random_init)
    return problem, oracle, oracle_log, em, em_log


def test_starts_at_the_truth_not_at_init(fitted):
    problem, _, oracle_log, _, _ = fitted
    start = oracle_log[0].params
    assert problem.model.parameter_error(start, problem.init_truth) == 0.0
    assert problem.model.parameter_error(oracle_log[-1].params, problem.init_truth) > 0.0


def test_final_nll_is_no_worse_than_joint_em_from_a_random_start(fitted):
    _, _, oracle_log, _, em_log = fitted
    assert oracle_log[-1].objective <= em_log[-1].objective + 1e-9
    # the NLL falls from the truth's: the MLE fits the sample better than the truth does
    assert oracle_log[-1].objective < oracle_log[0].objective


def test_result_is_a_fixed_point_of_em(fitted):
    problem, oracle, _, _, _ = fitted
    gate = MLEFromTruth().params.final_gate_options()
    with torch.no_grad():
        following, _ = problem.model.em_step(problem.X, problem.y, oracle, gate)
    moved = max(float((following[k] - oracle[k]).abs().max()) for k in oracle)
    assert moved < 1e-6


def test_declines_a_problem_without_truth():
    problem = _problem("symmoline", with_truth=False)
    init = problem.model.init_params(InitSpec(), torch_generator(1))
    with pytest.raises(UnsupportedProblem, match="oracle reference.*ground truth"):
        MLEFromTruth().fit(problem, init, lambda it: True)
