"""Test errors in the target's original units, for data standardised with training statistics.

Real regression datasets (``uci``, ``table``) standardise the target, ``y_std = (y - y_mean) /
y_scale``, and record ``y_mean`` and ``y_scale`` in ``Data.meta``. A model fitted to ``y_std``
predicts ``E[y_std | x]``, so its error in the original units is ``y_scale`` times the
standardised error. Data without ``y_scale`` (synthetic data) are already in original units
(scale 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from moebench import EvalContext, Metric, hookimpl

__all__ = ["HeldOutMSEOriginal", "HeldOutRMSEOriginal"]


def _y_scale(ctx: EvalContext) -> float:
    return float(ctx.meta.get("y_scale", 1.0) or 1.0)


def _test_mse(ctx: EvalContext) -> float:
    pred = ctx.cached("predict_test", lambda: ctx.model.predict(ctx.params, ctx.X_test))
    return float((ctx.y_test - pred).square().mean())


class HeldOutRMSEOriginal(Metric):
    """Root mean squared error on the test split, in the target's original units."""

    name = "test_rmse_original"
    summary = "RMSE of E[y|x] on the test data in the target's original units (sqrt(mse) * y_scale)"
    direction = "min"
    tasks = ("regression",)

    def compute(self, ctx: EvalContext) -> float:
        """``sqrt(mean (y - E[y | x])^2) * y_scale`` over the test samples."""
        return math.sqrt(_test_mse(ctx)) * _y_scale(ctx)


class HeldOutMSEOriginal(Metric):
    """Mean squared error on the test split, in the target's original units squared."""

    name = "test_mse_original"
    summary = "MSE of E[y|x] on the test data in the target's original units (mse * y_scale^2)"
    direction = "min"
    tasks = ("regression",)

    def compute(self, ctx: EvalContext) -> float:
        """``mean (y - E[y | x])^2 * y_scale^2`` over the test samples."""
        return _test_mse(ctx) * _y_scale(ctx) ** 2


@hookimpl
def register_metrics(register: Callable[[type], None]) -> None:
    """Register the original-units metrics."""
    register(HeldOutRMSEOriginal)
    register(HeldOutMSEOriginal)

