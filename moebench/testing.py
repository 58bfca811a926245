"""Conformance checks for plugins, in the spirit of scikit-learn's ``check_estimator``.

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

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import plugins
from .algorithm import Algorithm, Iterate, Problem
from .dataset import Data, Dataset
from .device import Device
from .errors import DataError, DataUnavailable, UnsupportedProblem
from .metric import EvalContext, Metric
from .model import InitSpec, Model, ParamDict
from .runner import build_model
from .seeding import torch_generator

DEFAULT_DATASET = ("synthetic-moe", {"n": 400, "n_test": 100, "d": 4, "k": 2, "sigma": 0.3})

#: Calls of the model's methods that ``fit`` may still make once the callback said stop.
MAX_MODEL_CALLS_AFTER_STOP = 2
#: Iterations within which an algorithm with its convergence criterion on must return.
MAX_CONVERGENCE_ITER = 1000
#: The ``tol`` given to algorithms that have one, for the convergence check.
CONVERGENCE_TOL = 1e-3


@dataclass
class Report:
    """What the kit's callback saw at one iteration (raw values, as the algorithm gave them)."""

    iteration: Any
    objective: Any
    extras: dict[str, Any]
    params: ParamDict  # the tensors themselves
    copies: ParamDict  # clones taken at report time


@dataclass
class Run:
    """One fit of the kit: what ``fit`` returned and what the callback saw."""

    params: ParamDict
    log: list[Report]
    calls_after_stop: int  # model method calls fit made after the callback said stop
    start: ParamDict  # the init tensors given to fit (to check they were left alone)


@dataclass
class Fixture:
    """One small problem on one device and dtype, and a helper to run the algorithm on it."""

    algorithm_cls: type[Algorithm]
    params: dict[str, Any]
    data: Data
    device: Device
    dtype: torch.dtype | None = None
    model: Model = field(init=False)
    X: torch.Tensor = field(init=False)
    y: torch.Tensor = field(init=False)
    init: ParamDict = field(init=False)
    model_calls: int = field(init=False, default=0)
    _runs: dict[tuple[int, int], Run] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        dtype = self.dtype or self.device.default_dtype
        self.dtype = dtype
        self.model = build_model(self.data, None, self.device, dtype)
        self.X = self.device.tensor(self.data.X_train, dtype)
        self.y = self.device.tensor(self.data.y_train, dtype)
        self.init = {
            k: v.to(self.device.torch_device())
            for k, v in self.model.init_params(InitSpec(), torch_generator(7)).items()
        }
        self._count_model_calls()

    def _count_model_calls(self) -> None:
        """Wrap the model's public methods on the instance so that calls can be counted."""
        for name, member in inspect.getmembers(type(self.model), inspect.isfunction):
            if name.startswith("_"):
                continue
            bound = getattr(self.model, name)

            @functools.wraps(member)
            def counted(*args, __bound=bound, **kwargs):
                self.model_calls += 1
                return __bound(*args, **kwargs)

            setattr(self.model, name, counted)

    def algorithm(self, params: dict[str, Any] | None = None) -> Algorithm:
        """An instance with the fixture's parameters (updated by ``params``)."""
        merged = {**self.params, **(params or {})}
        return self.algorithm_cls(self.algorithm_cls.Params.model_validate(merged))

    def standard_run(self, stop_at: int = 4, seed: int = 0) -> Run:
        """:meth:`run` with these arguments, computed once and shared by the checks."""
        if (stop_at, seed) not in self._runs:
            self._runs[(stop_at, seed)] = self.run(stop_at, seed)
        return self._runs[(stop_at, seed)]

    def run(
        self,
        stop_at: int,
        seed: int = 0,
        stop: Callable[[Iterate], bool] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Run:
        """Fit with a callback that says stop after iteration ``stop_at`` (or when ``stop``
        returns ``False``); every report is recorded, also those after the stop."""
        log: list[Report] = []
        stopped: dict[str, int | None] = {"calls": None}

        def callback(it: Iterate) -> bool:
            log.append(Report(it.iteration, it.objective, dict(it.extras), dict(it.params),
                              {k: v.detach().clone() for k, v in it.params.items()
                               if isinstance(v, torch.Tensor)}))
            if stopped["calls"] is not None:
                return False
            go = it.iteration < stop_at if isinstance(it.iteration, int) else False
            if stop is not None and not stop(it):
                go = False
            if not go:
                stopped["calls"] = self.model_calls
            return go

        algorithm = self.algorithm(params)
        problem = Problem(self.model, self.X, self.y,
                          torch_generator(seed, self.device.torch_device()),
                          self.data.input_density, init_spec=InitSpec())
        start = {k: v.clone() for k, v in self.init.items()}
        result = algorithm.fit(problem, start, callback)
        after = 0 if stopped["calls"] is None else self.model_calls - stopped["calls"]
        return Run(result, log, after, start)


def _where(report: Report) -> str:
    return f"at iteration {report.iteration!r}"


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")


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
        f"Iterate.iteration must be a Python int, got {[_type_name(i) for i in iters[:3]]}"
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
                f"Iterate.objective {_where(r)} is a {_type_name(obj)} ({str(obj)[:40]!r}): "
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
                f"Iterate.extras[{key!r}] {_where(r)} is a {_type_name(value)} "
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
        f"fit returned {_type_name(params)}: return the final parameters (a dict of tensors "
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


def available_devices() -> list[Device]:
    """Instances of every registered device that works on this machine."""
    devices = [cls() for cls in plugins.components("devices").values()]
    return [d for d in devices if d.is_available()]


def _label(name: str | type) -> str:
    """How a failure names the component: its plugin name."""
    return name if isinstance(name, str) else getattr(name, "name", name.__name__)


def _run_checks(label: str, checks: Iterable[tuple[str, Callable[[], None]]]) -> list[str]:
    """Run ``(check_id, check)`` pairs in order; the ids that passed. The first failure raises
    ``AssertionError`` prefixed with ``label`` and the check's id."""
    passed = []
    for check_id, check in checks:
        try:
            check()
        except AssertionError as exc:
            raise AssertionError(f"{label}: {check_id}: {exc}") from exc
        passed.append(check_id)
    return passed


def _component_class(kind: str, name: str | type) -> type:
    """A registered component of ``kind`` by name, or a class given directly (checked against
    the kind's base class, e.g. an algorithm that is not registered yet)."""
    base = plugins.KINDS[kind][1]
    if isinstance(name, type):
        if not issubclass(name, base):
            raise TypeError(f"{name!r} is not a moebench.{base.__name__} subclass")
        return name
    return plugins.get(kind, name)


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
    algorithm_cls = _component_class("algorithms", name)
    dataset_cls = _component_class("datasets", dataset[0])
    data = dataset_cls(dataset_cls.Params.model_validate(dataset[1])).load(0)
    converging = _converging_params(algorithm_cls, converge_params)
    label = getattr(algorithm_cls, "name", algorithm_cls.__name__)
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
        otherwise the convergence check is not run.

    Returns
    -------
    list of str
        The checks that passed. The first failure raises ``AssertionError`` naming the
        algorithm, the check and what to change.
    """
    return _run_checks(_label(name), algorithm_checks(name, params, dataset, converge_params))


# --------------------------------------------------------------------------------------------
# Datasets

#: Fraction of test rows that may also occur (same inputs and target) in the training split.
MAX_SHARED_TEST_ROWS = 0.5


def _load(cls: type[Dataset], params: dict[str, Any], seed: int) -> Data:
    dataset = cls(cls.Params.model_validate(params))
    try:
        data = dataset.load(seed)
    except DataError as exc:
        if isinstance(exc, DataUnavailable):
            raise
        raise AssertionError(f"load({seed}) produced invalid data: {exc}") from exc
    assert isinstance(data, Data), (
        f"load({seed}) returned {_type_name(data)}: return a moebench.Data"
    )
    return data


def _check_arrays(data: Data, task: str) -> None:
    for split in ("train", "test"):
        X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
        assert isinstance(X, np.ndarray) and X.ndim == 2, (
            f"X_{split} must be a 2-d numpy array (n, d)"
        )
        assert isinstance(y, np.ndarray) and y.ndim == 1, f"y_{split} must be a 1-d numpy array"
        assert X.shape[0] == y.shape[0], f"X_{split} and y_{split} have different numbers of rows"
        assert np.issubdtype(X.dtype, np.floating), (
            f"X_{split} has dtype {X.dtype}: give float inputs (X.astype(np.float64))"
        )
        assert np.isfinite(X).all() and np.isfinite(y.astype(float)).all(), (
            f"X_{split} or y_{split} has NaN or infinite values: clean or drop them in load()"
        )
        if task == "regression":
            assert np.issubdtype(y.dtype, np.floating), (
                f"y_{split} has dtype {y.dtype}: a regression target must be float"
            )
        else:
            assert np.issubdtype(y.dtype, np.integer), (
                f"y_{split} has dtype {y.dtype}: classification labels must be integers 0..C-1"
            )
            n_classes = data.meta.get("n_classes")
            assert isinstance(n_classes, int) and n_classes >= 2, (
                "classification data must set meta['n_classes'] (an int >= 2)"
            )
            if y.size:
                assert y.min() >= 0 and y.max() < n_classes, (
                    f"y_{split} has labels outside 0..{n_classes - 1} (meta['n_classes'])"
                )
    assert data.X_train.shape[1] == data.X_test.shape[1], (
        "X_train and X_test have different numbers of features"
    )
    assert data.task == task, (
        f"Data.task is {data.task!r} but the dataset class declares task = {task!r}"
    )


def _shared_rows(data: Data) -> float:
    """Fraction of test rows (inputs and target) that also occur in the training split."""
    if data.X_test.shape[0] == 0:
        return 0.0
    train = {row.tobytes() for row in np.column_stack([data.X_train, data.y_train])}
    test = [row.tobytes() for row in np.column_stack([data.X_test, data.y_test])]
    return sum(row in train for row in test) / len(test)


def dataset_checks(
    name: str | type[Dataset],
    params: dict[str, Any] | None = None,
    seeds: tuple[int, int] = (0, 1),
) -> Iterator[tuple[str, Callable[[], None]]]:
    """Yield ``(check id, zero-argument check)`` pairs for a dataset (see :func:`check_dataset`).

    The data is loaded lazily by the first check; a
    :class:`~moebench.errors.DataUnavailable` from ``load`` propagates (the files are not on
    this machine).
    """
    cls = _component_class("datasets", name)
    params = dict(params or {})
    cache: dict[int, Data] = {}

    def data(seed: int) -> Data:
        if seed not in cache:
            cache[seed] = _load(cls, params, seed)
        return cache[seed]

    def arrays() -> None:
        for seed in seeds:
            _check_arrays(data(seed), cls.task)

    def deterministic() -> None:
        again = _load(cls, params, seeds[0])
        for field_name in ("X_train", "y_train", "X_test", "y_test"):
            assert np.array_equal(getattr(data(seeds[0]), field_name),
                                  getattr(again, field_name)), (
                f"two loads with seed {seeds[0]} differ in {field_name}: derive every random "
                "choice from the seed (np.random.default_rng(seed)), never from global state"
            )

    def separated() -> None:
        d = data(seeds[0])
        assert d.X_test is not d.X_train, "X_test is the same array as X_train"
        shared = _shared_rows(d)
        assert shared <= MAX_SHARED_TEST_ROWS, (
            f"{shared:.0%} of the test rows also occur in the training split: split the rows "
            "into disjoint train and test sets (test metrics must measure generalisation)"
        )

    def model() -> None:
        d = data(seeds[0])
        assert d.model.name in plugins.components("models"), (
            f"Data.model names {d.model.name!r}, which is not a registered model family"
        )
        device = next(dev for dev in available_devices() if dev.name == "cpu")
        built = build_model(d, None, device, torch.float64)
        if d.truth is not None:
            shapes = built.shapes()
            assert set(d.truth) == set(shapes) and all(
                tuple(np.shape(d.truth[k])) == tuple(shapes[k]) for k in shapes), (
                f"Data.truth has shapes { {k: np.shape(v) for k, v in d.truth.items()} }, the "
                f"model {d.model.name!r} with {d.model.params} has {shapes}"
            )

    yield from (("check_dataset_arrays", arrays),
                ("check_dataset_deterministic", deterministic),
                ("check_dataset_train_test_separated", separated),
                ("check_dataset_model", model))


def check_dataset(
    name: str | type[Dataset],
    params: dict[str, Any] | None = None,
    seeds: tuple[int, int] = (0, 1),
) -> list[str]:
    """Run the conformance checks on a dataset plugin.

    Checks: ``load(seed)`` returns a :class:`~moebench.Data` with 2-d float inputs and 1-d
    targets of matching lengths (float for regression; integer labels ``0..C-1`` with
    ``meta['n_classes']`` for classification), no NaN or infinite value, the class's ``task``;
    the same seed gives the same arrays; the test rows are (mostly) not training rows; the
    proposed model family is registered and the truth, if any, has its shapes.

    Parameters
    ----------
    name
        A registered dataset's name, or a :class:`~moebench.Dataset` subclass.
    params
        The dataset's parameters (defaults otherwise).
    seeds
        Two seeds to load with.

    Returns
    -------
    list of str
        The checks that passed. The first failure raises ``AssertionError`` with what to
        change; :class:`~moebench.errors.DataUnavailable` propagates.
    """
    return _run_checks(_label(name), dataset_checks(name, params, seeds))


# --------------------------------------------------------------------------------------------
# Metrics


def check_metric(
    name: str | type[Metric],
    params: dict[str, Any] | None = None,
    dataset: tuple[str, dict[str, Any]] = DEFAULT_DATASET,
) -> list[str]:
    """Run the conformance checks on a metric plugin.

    Checks: ``direction`` is ``"min"`` or ``"max"``; on a small problem (at the initial point
    and at the truth) the value is a finite Python float, the same twice; on the same data
    without a test split a metric that reads the test split says so (``uses_test``, or a
    ``test_*`` name) and is then NaN, and any other metric stays finite.

    Returns
    -------
    list of str
        The checks that passed; the first failure raises ``AssertionError``.
    """
    cls = name if isinstance(name, type) else plugins.get("metrics", name)
    label = getattr(cls, "name", cls.__name__)
    metric = cls(cls.Params.model_validate(params or {}))
    dataset_cls = plugins.get("datasets", dataset[0])
    data = dataset_cls(dataset_cls.Params.model_validate(dataset[1])).load(0)
    device = next(d for d in available_devices() if d.name == "cpu")
    model = build_model(data, None, device, torch.float64)
    tensors = {k: device.tensor(getattr(data, k), torch.float64)
               for k in ("X_train", "y_train", "X_test", "y_test")}
    truth = model.as_tensors(data.truth) if data.truth is not None else None
    points = {"the initial point": model.init_params(InitSpec(), torch_generator(7))}
    if truth is not None:
        points["the truth"] = truth

    def context(params: ParamDict, with_test: bool = True) -> EvalContext:
        X_test = tensors["X_test"] if with_test else tensors["X_test"][:0]
        y_test = tensors["y_test"] if with_test else tensors["y_test"][:0]
        return EvalContext(model, params, tensors["X_train"], tensors["y_train"], X_test, y_test,
                           truth, data.meta)

    def direction() -> None:
        assert cls.direction in ("min", "max"), (
            f"direction is {cls.direction!r}: set direction = 'min' (lower is better) or 'max'"
        )

    def values() -> None:
        for where, params in points.items():
            if not metric.applies_to(context(params)):
                continue
            value, again = metric(context(params)), metric(context(params))
            assert isinstance(value, float) and math.isfinite(value), (
                f"at {where} the metric is {value!r}: compute must return a finite float "
                "(float(t) of a 0-d tensor)"
            )
            assert value == again, f"at {where} two evaluations differ: {value} != {again}"

    def without_test() -> None:
        params = points["the initial point"]
        ctx = context(params, with_test=False)
        if metric.reads_test_split():
            assert not metric.applies_to(ctx), (
                "the metric reads the test split but applies to data without one"
            )
            return
        if metric.applies_to(ctx):
            value = metric(ctx)
            assert isinstance(value, float) and math.isfinite(value), (
                f"without a test split the metric is {value!r}: if it reads the test split, "
                "set uses_test = True (or name it test_*) so that it is absent there"
            )

    return _run_checks(label, [("check_metric_direction", direction),
                               ("check_metric_values", values),
                               ("check_metric_without_test_split", without_test)])
