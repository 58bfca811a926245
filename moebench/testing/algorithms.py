"""Conformance checks for algorithm plugins, in the spirit of scikit-learn's ``check_estimator``.

Plugin authors run ``check_algorithm("my-algorithm")`` (or ``check_algorithm(MyAlgorithm)``,
before registering it) and ``check_dataset("my-dataset", params)`` in their own test suite;
moebench runs them over every registered algorithm and dataset. Each check raises
``AssertionError`` with a message that names the broken contract and says what to change.

The algorithm checks (the contract is numbered in :mod:`moebench.algorithm`):

``check_reports_initial_point_and_counts``
    iteration 0 first, then 1, 2, 3, ... as Python ints.
``check_callback_types``
    ``Iterate.objective`` a finite Python float or ``None``; ``extras`` scalar Python floats.
``check_respects_max_iter``, ``check_stops_at_initial_point``, ``check_callback_stop_midway``
    when the callback returns ``False``: no further callback, and ``fit`` returns after at most
    :data:`MAX_MODEL_CALLS_AFTER_STOP` calls of the model's methods.
``check_returns_on_own_convergence``
    with a convergence criterion switched on (``tol`` when the algorithm has one, or the
    ``converge_params`` given), ``fit`` returns by itself within :data:`MAX_CONVERGENCE_ITER`
    iterations.
``check_does_not_modify_init``, ``check_does_not_modify_reported_params``
    ``init`` is left alone; tensors given to the callback are not modified afterwards.
``check_result_shapes``, ``check_finite``
    the returned parameters have the model's names and shapes, on its device, and are finite.
``check_deterministic``
    the same generator seed gives the same parameters and objectives.
``check_device_dtype_roundtrip``
    on every available device, in the device's default dtype and in the other floating dtype,
    reported and returned tensors keep the model's device and dtype.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..algorithm import Algorithm
from ..dataset import Dataset
from ..errors import UnsupportedProblem
from .fixture import Fixture, Report
from .harness import (
    DEFAULT_DATASET,
    available_devices,
    component_class,
    component_label,
    run_checks,
    type_name,
)

#: Calls of the model's methods that ``fit`` may still make once the callback said stop.
MAX_MODEL_CALLS_AFTER_STOP = 2
#: Iterations within which an algorithm with its convergence criterion on must return.
MAX_CONVERGENCE_ITER = 1000
#: The ``tol`` given to algorithms that have one, for the convergence check.
CONVERGENCE_TOL = 1e-3


def _where(report: Report) -> str:
    return f"at iteration {report.iteration!r}"


def _stopped_promptly(log: list[Report], after: int, stop_index: int, what: str) -> None:
    extra = len(log) - (stop_index + 1)
    assert extra <= 0, (
        f"{what}, yet the algorithm reported {extra} more iteration(s): return from fit as soon "
        "as the callback returns False (`if not callback(...): return params`)"
    )
    assert after <= MAX_MODEL_CALLS_AFTER_STOP, (
        f"{what}, yet fit made {after} more call(s) of the model's methods before returning "
        f"(at most {MAX_MODEL_CALLS_AFTER_STOP} allowed): return right after the callback says "
        "stop, without another step or evaluation"
    )


def check_reports_initial_point_and_counts(fx: Fixture) -> None:
    iters = [r.iteration for r in fx.standard_run().log]
    assert iters and iters[0] == 0, (
        f"the first callback must report iteration 0 (the initial point), got {iters[:3]}: call "
        "callback(Iterate(0, params, ...)) before the first step"
    )
    assert all(type(i) is int for i in iters), (
        f"Iterate.iteration must be a Python int, got {[type_name(i) for i in iters[:3]]}"
    )
    assert iters == list(range(len(iters))), (
        f"iterations must count 0, 1, 2, ... (one report per step; restarts keep counting), got "
        f"{iters}"
    )


def check_callback_types(fx: Fixture) -> None:
    for r in fx.standard_run().log:
        obj = r.objective
        if obj is not None:
            assert isinstance(obj, float) and not isinstance(obj, bool), (
                f"Iterate.objective {_where(r)} is a {type_name(obj)} ({str(obj)[:40]!r}): "
                "report a Python float, e.g. objective=float(loss.detach()), or None"
            )
            assert math.isfinite(obj), (
                f"Iterate.objective {_where(r)} is {obj}: report a finite value (the runner "
                "marks a non-finite objective as divergence)"
            )
        assert isinstance(r.extras, dict), "Iterate.extras must be a dict of name -> float"
        for key, value in r.extras.items():
            assert isinstance(key, str), f"Iterate.extras key {key!r} {_where(r)} is not a str"
            assert isinstance(value, float | int) and not isinstance(value, bool), (
                f"Iterate.extras[{key!r}] {_where(r)} is a {type_name(value)} "
                f"({str(value)[:40]!r}): report scalar Python floats, e.g. float(t.item())"
            )


def check_respects_max_iter(fx: Fixture) -> None:
    run = fx.standard_run(stop_at=4)
    if len(run.log) >= 5:  # (fewer reports: the algorithm converged and returned by itself)
        _stopped_promptly(run.log, run.calls_after_stop, 4,
                          "the callback returned False at iteration 4 (max_iter)")


def check_stops_at_initial_point(fx: Fixture) -> None:
    run = fx.run(stop_at=0)
    _stopped_promptly(run.log, run.calls_after_stop, 0,
                      "the callback returned False at iteration 0")


def check_callback_stop_midway(fx: Fixture) -> None:
    run = fx.run(stop_at=100, stop=lambda it: it.iteration < 2)
    if len(run.log) >= 3:
        _stopped_promptly(run.log, run.calls_after_stop, 2,
                          "the callback returned False at iteration 2 (a timeout, say)")


def check_returns_on_own_convergence(fx: Fixture, params: dict[str, Any]) -> None:
    run = fx.run(stop_at=MAX_CONVERGENCE_ITER, params=params)
    assert len(run.log) <= MAX_CONVERGENCE_ITER, (
        f"with {params} the algorithm was still iterating after {MAX_CONVERGENCE_ITER} "
        "iterations: return from fit when your convergence criterion holds (e.g. relative "
        "decrease of the objective below tol); the runner records that as status 'done'"
    )


def check_does_not_modify_init(fx: Fixture) -> None:
    run = fx.standard_run()
    for name, value in fx.init.items():
        assert torch.equal(run.start[name], value), (
            f"fit modified the init it was given (parameter {name!r}) in place: copy it first, "
            "e.g. params = {k: v.clone() for k, v in init.items()}"
        )


def check_does_not_modify_reported_params(fx: Fixture) -> None:
    for r in fx.standard_run().log:
        for name, copy in r.copies.items():
            assert torch.equal(r.params[name], copy), (
                f"the tensor {name!r} reported {_where(r)} was modified after it was reported: "
                "the callback may keep reported tensors, so report copies (v.clone()) or build "
                "new tensors at every step instead of updating them in place"
            )


def check_result_shapes(fx: Fixture) -> None:
    params = fx.standard_run().params
    expected = fx.model.shapes()
    assert isinstance(params, dict), (
        f"fit returned {type_name(params)}: return the final parameters (a dict of tensors "
        f"{sorted(expected)}); the cell's final metrics are computed on them"
    )
    assert set(params) == set(expected), f"parameter names {sorted(params)} != {sorted(expected)}"
    for name, shape in expected.items():
        assert tuple(params[name].shape) == tuple(shape), (
            f"parameter {name!r} has shape {tuple(params[name].shape)}, model says {shape}"
        )
        assert params[name].device.type == fx.device.torch_device().type, (
            f"parameter {name!r} is on {params[name].device}, the run's device is {fx.device.name}"
        )


def check_finite(fx: Fixture) -> None:
    params = fx.standard_run().params
    for name, value in params.items():
        assert torch.isfinite(value).all(), f"parameter {name!r} is not finite"
    nll = fx.model.nll(params, fx.X, fx.y)
    assert torch.isfinite(nll), f"training NLL at the result is {float(nll)}"


def check_deterministic(fx: Fixture) -> None:
    a, b = fx.standard_run(), fx.run(stop_at=4)
    for name in a.params:
        assert torch.equal(a.params[name], b.params[name]), (
            f"two runs with the same seed and init differ in {name!r}: draw every random number "
            "from problem.generator (torch.rand(..., generator=problem.generator, "
            "device=problem.generator.device)), never from the global RNG"
        )
    assert [r.objective for r in a.log] == [r.objective for r in b.log], (
        "two runs with the same seed reported different objectives: use problem.generator for "
        "every random choice"
    )


def check_device_dtype_roundtrip(fx: Fixture) -> None:
    other = torch.float32 if fx.dtype == torch.float64 else torch.float64
    fixtures = [(fx, fx.standard_run()),
                (sibling := Fixture(fx.algorithm_cls, fx.params, fx.data, fx.device, other),
                 sibling.run(stop_at=1))]
    for fixture, run in fixtures:
        want_device = fixture.device.torch_device().type
        for where, tensors in [("returned", run.params)] + [
            (f"reported at iteration {r.iteration}", r.params) for r in run.log
        ]:
            for name, value in tensors.items():
                assert value.device.type == want_device and value.dtype == fixture.dtype, (
                    f"with the model on {fixture.device.name} in {fixture.dtype}, the {where} "
                    f"parameter {name!r} is {value.dtype} on {value.device}: create tensors "
                    "with the model's device and dtype (torch.zeros(..., device=model.device, "
                    "dtype=model.dtype), t.to(X)), never a hard-coded one"
                )


CHECKS: list[Callable[[Fixture], None]] = [
    check_reports_initial_point_and_counts,
    check_callback_types,
    check_respects_max_iter,
    check_stops_at_initial_point,
    check_callback_stop_midway,
    check_does_not_modify_init,
    check_does_not_modify_reported_params,
    check_result_shapes,
    check_finite,
    check_deterministic,
    check_device_dtype_roundtrip,
]


class ConvergenceCheckSkipped(UserWarning):
    """The conformance kit could not check that an algorithm stops on its own convergence
    (no ``tol`` parameter, no ``converge_params``)."""


def _converging_params(
    algorithm_cls: type[Algorithm], converge_params: dict[str, Any] | None
) -> dict[str, Any] | None:
    if converge_params is not None:
        return converge_params
    if "tol" in algorithm_cls.Params.model_fields:
        return {"tol": CONVERGENCE_TOL}
    return None


def algorithm_checks(
    name: str | type[Algorithm],
    params: dict[str, Any] | None = None,
    dataset: tuple[str | type[Dataset], dict[str, Any]] = DEFAULT_DATASET,
    converge_params: dict[str, Any] | None = None,
) -> Iterator[tuple[str, Callable[[], None]]]:
    """Yield ``(check id, zero-argument check)`` pairs, one per check and device.

    Useful for ``pytest.mark.parametrize``; :func:`check_algorithm` runs them all. Raises
    :class:`~moebench.errors.UnsupportedProblem` when the algorithm declines the dataset's
    model family.
    """
    algorithm_cls = component_class("algorithms", name)
    dataset_cls = component_class("datasets", dataset[0])
    data = dataset_cls(dataset_cls.Params.model_validate(dataset[1])).load(0)
    converging = _converging_params(algorithm_cls, converge_params)
    label = getattr(algorithm_cls, "name", algorithm_cls.__name__)
    if converging is None:
        warnings.warn(
            f"{label}: check_returns_on_own_convergence is not run: the algorithm has no `tol` "
            "parameter and no converge_params were given; pass converge_params={...} (the "
            "parameters under which fit returns by itself) to check that it stops on its own",
            ConvergenceCheckSkipped, stacklevel=2)
    for device in available_devices():
        fx = Fixture(algorithm_cls, dict(params or {}), data, device)
        reason = fx.algorithm().unsupported_reason(fx.model)
        if reason:
            raise UnsupportedProblem(f"{label} cannot fit {fx.model.name}: {reason}")
        for check in CHECKS:
            yield f"{check.__name__}[{device.name}]", (lambda c=check, f=fx: c(f))
        if converging is not None:
            yield (f"check_returns_on_own_convergence[{device.name}]",
                   lambda f=fx: check_returns_on_own_convergence(f, converging))


def check_algorithm(
    name: str | type[Algorithm],
    params: dict[str, Any] | None = None,
    dataset: tuple[str | type[Dataset], dict[str, Any]] = DEFAULT_DATASET,
    converge_params: dict[str, Any] | None = None,
) -> list[str]:
    """Run every conformance check on an algorithm on every available device.

    Parameters
    ----------
    name
        A registered algorithm's name, or an :class:`~moebench.Algorithm` subclass (registered
        or not).
    params
        The algorithm's parameters (defaults otherwise).
    dataset
        ``(dataset name or class, params)`` of the small problem to fit.
    converge_params
        Parameters under which the algorithm must return by itself (its convergence criterion
        switched on). Default: ``{"tol": 1e-3}`` when the algorithm has a ``tol`` parameter;
        otherwise the convergence check is not run, and a :class:`ConvergenceCheckSkipped`
        warning says so.

    Returns
    -------
    list of str
        The checks that passed. The first failure raises ``AssertionError`` naming the
        algorithm, the check and what to change.
    """
    checks = algorithm_checks(name, params, dataset, converge_params)
    return run_checks(component_label(name), checks)

