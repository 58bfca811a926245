"""Conformance checks for metric plugins: a direction, finite deterministic values, and the
test split handled (see :func:`check_metric`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import plugins
from ..metric import EvalContext, Metric
from ..model import InitSpec, ParamDict
from ..seeding import torch_generator
from .harness import DEFAULT_DATASET, available_devices, build_model, run_checks


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

    return run_checks(label, [("check_metric_direction", direction),
                               ("check_metric_values", values),
                               ("check_metric_without_test_split", without_test)])
