"""Conformance checks for algorithm plugins, in the spirit of scikit-learn's ``check_estimator``.

Plugin authors run ``check_algorithm("my-algorithm")`` in their own test suite; moebench runs
it over every registered algorithm. Each check raises ``AssertionError`` with a message saying
which contract was broken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from . import plugins
from .algorithm import Algorithm, Iterate, Problem
from .dataset import Data
from .device import Device
from .errors import UnsupportedProblem
from .model import InitSpec, Model, ParamDict
from .runner import build_model
from .seeding import torch_generator

DEFAULT_DATASET = ("synthetic-moe", {"n": 400, "n_test": 100, "d": 4, "k": 2, "sigma": 0.3})


@dataclass
class Fixture:
    """One small problem on one device, and a helper to run the algorithm on it."""

    algorithm_cls: type[Algorithm]
    params: dict[str, Any]
    data: Data
    device: Device
    model: Model = field(init=False)
    X: torch.Tensor = field(init=False)
    y: torch.Tensor = field(init=False)
    init: ParamDict = field(init=False)

    def __post_init__(self) -> None:
        dtype = self.device.default_dtype
        self.model = build_model(self.data, None, self.device, dtype)
        self.X = self.device.tensor(self.data.X_train, dtype)
        self.y = self.device.tensor(self.data.y_train, dtype)
        self.init = {
            k: v.to(self.device.torch_device())
            for k, v in self.model.init_params(InitSpec(), torch_generator(7)).items()
        }

    def run(self, stop_at: int, seed: int = 0, stop: Callable[[Iterate], bool] | None = None):
        """Fit with a callback that stops after ``stop_at`` iterations; returns (params, log)."""
        log: list[Iterate] = []

        def callback(it: Iterate) -> bool:
            log.append(Iterate(it.iteration, {k: v.detach().clone() for k, v in
                                              it.params.items()}, it.objective))
            if stop is not None and not stop(it):
                return False
            return it.iteration < stop_at

        algorithm = self.algorithm_cls(self.algorithm_cls.Params.model_validate(self.params))
        problem = Problem(self.model, self.X, self.y,
                          torch_generator(seed, self.device.torch_device()))
        start = {k: v.clone() for k, v in self.init.items()}
        params = algorithm.fit(problem, start, callback)
        return params, log


def check_reports_initial_point_and_counts(fx: Fixture) -> None:
    _, log = fx.run(stop_at=3)
    iters = [it.iteration for it in log]
    assert iters and iters[0] == 0, f"the first callback must be iteration 0, got {iters[:3]}"
    assert iters == list(range(len(iters))), f"iterations must count 0, 1, 2, ...: {iters}"


def check_respects_max_iter(fx: Fixture) -> None:
    _, log = fx.run(stop_at=3)
    assert len(log) <= 4, (
        f"callback returned False at iteration 3, yet the algorithm reported {len(log)} "
        "iterations: it must stop as soon as the callback returns False"
    )


def check_stops_at_initial_point(fx: Fixture) -> None:
    _, log = fx.run(stop_at=0)
    assert len(log) == 1, f"stopped at iteration 0 but reported {len(log)} iterations"


def check_callback_stop_midway(fx: Fixture) -> None:
    _, log = fx.run(stop_at=100, stop=lambda it: it.iteration < 2)
    assert len(log) <= 3, f"callback stop at iteration 2 ignored ({len(log)} iterations)"


def check_result_shapes(fx: Fixture) -> None:
    params, _ = fx.run(stop_at=3)
    expected = fx.model.shapes()
    assert set(params) == set(expected), f"parameter names {sorted(params)} != {sorted(expected)}"
    for name, shape in expected.items():
        assert tuple(params[name].shape) == tuple(shape), (
            f"parameter {name!r} has shape {tuple(params[name].shape)}, model says {shape}"
        )
        assert params[name].device.type == fx.device.torch_device().type, (
            f"parameter {name!r} is on {params[name].device}, the run's device is {fx.device.name}"
        )


def check_finite(fx: Fixture) -> None:
    params, log = fx.run(stop_at=5)
    for name, value in params.items():
        assert torch.isfinite(value).all(), f"parameter {name!r} is not finite"
    nll = fx.model.nll(params, fx.X, fx.y)
    assert torch.isfinite(nll), f"training NLL at the result is {float(nll)}"
    for it in log:
        if it.objective is not None:
            assert torch.isfinite(torch.tensor(it.objective)), (
                f"objective at iteration {it.iteration} is {it.objective}"
            )


def check_deterministic(fx: Fixture) -> None:
    a, _ = fx.run(stop_at=4, seed=123)
    b, _ = fx.run(stop_at=4, seed=123)
    for name in a:
        assert torch.equal(a[name], b[name]), (
            f"two runs with the same seed and init differ in {name!r}: use problem.generator "
            "for every random choice"
        )


CHECKS: list[Callable[[Fixture], None]] = [
    check_reports_initial_point_and_counts,
    check_respects_max_iter,
    check_stops_at_initial_point,
    check_callback_stop_midway,
    check_result_shapes,
    check_finite,
    check_deterministic,
]


def available_devices() -> list[Device]:
    """Instances of every registered device that works on this machine."""
    devices = [cls() for cls in plugins.components("devices").values()]
    return [d for d in devices if d.is_available()]


def algorithm_checks(
    name: str,
    params: dict[str, Any] | None = None,
    dataset: tuple[str, dict[str, Any]] = DEFAULT_DATASET,
) -> Iterator[tuple[str, Callable[[], None]]]:
    """Yield ``(check id, zero-argument check)`` pairs, one per check and device.

    Useful for ``pytest.mark.parametrize``; :func:`check_algorithm` runs them all.
    """
    algorithm_cls = plugins.get("algorithms", name)
    dataset_cls = plugins.get("datasets", dataset[0])
    data = dataset_cls(dataset_cls.Params.model_validate(dataset[1])).load(0)
    for device in available_devices():
        fx = Fixture(algorithm_cls, dict(params or {}), data, device)
        reason = algorithm_cls(algorithm_cls.Params.model_validate(fx.params)) \
            .unsupported_reason(fx.model)
        if reason:
            raise UnsupportedProblem(f"{name} cannot fit {fx.model.name}: {reason}")
        for check in CHECKS:
            yield f"{check.__name__}[{device.name}]", (lambda c=check, f=fx: c(f))


def check_algorithm(
    name: str,
    params: dict[str, Any] | None = None,
    dataset: tuple[str, dict[str, Any]] = DEFAULT_DATASET,
) -> list[str]:
    """Run every conformance check on algorithm ``name`` on every available device.

    Parameters
    ----------
    name
        A registered algorithm.
    params
        The algorithm's parameters (defaults otherwise).
    dataset
        ``(dataset name, params)`` of the small problem to fit.

    Returns
    -------
    list of str
        The checks that passed. The first failure raises ``AssertionError``.
    """
    passed = []
    for check_id, check in algorithm_checks(name, params, dataset):
        try:
            check()
        except AssertionError as exc:
            raise AssertionError(f"{name}: {check_id}: {exc}") from exc
        passed.append(check_id)
    return passed
