"""Classification metrics: train/test accuracy and test cross-entropy."""

from __future__ import annotations

from collections.abc import Callable

import torch

from moebench import EvalContext, Metric, hookimpl

__all__ = ["TestAccuracy", "TestCrossEntropy", "TrainAccuracy"]


def _labels(y: torch.Tensor) -> torch.Tensor:
    return torch.round(y).long() if y.is_floating_point() else y.long()


def _accuracy(ctx: EvalContext, split: str) -> float:
    X, y = getattr(ctx, f"X_{split}"), getattr(ctx, f"y_{split}")
    probs = ctx.cached(f"predict_{split}", lambda: ctx.model.predict(ctx.params, X))
    return float((probs.argmax(dim=1) == _labels(y)).to(torch.float64).mean())


class TrainAccuracy(Metric):
    """Fraction of training samples whose most probable class is the label."""

    name = "train_accuracy"
    summary = "accuracy of argmax_c p(y = c | x) on the training data"
    direction = "max"
    tasks = ("classification",)

    def compute(self, ctx: EvalContext) -> float:
        """``mean 1[argmax_c p(c | x_n) = y_n]`` over the training samples."""
        return _accuracy(ctx, "train")


class TestAccuracy(Metric):
    """Fraction of test samples whose most probable class is the label."""

    __test__ = False  # not a pytest test class despite its name

    name = "test_accuracy"
    summary = "accuracy of argmax_c p(y = c | x) on the test data"
    direction = "max"
    tasks = ("classification",)

    def compute(self, ctx: EvalContext) -> float:
        """``mean 1[argmax_c p(c | x_n) = y_n]`` over the test samples."""
        return _accuracy(ctx, "test")


class TestCrossEntropy(Metric):
    """Mean cross-entropy of the predicted class distribution on the test split."""

    __test__ = False

    name = "test_cross_entropy"
    summary = "mean cross-entropy -log p(y | x) on the test data (the test NLL)"
    direction = "min"
    tasks = ("classification",)

    def compute(self, ctx: EvalContext) -> float:
        """``-mean log p(y_n | x_n)`` over the test samples."""
        ll = ctx.cached(
            "log_likelihood_test",
            lambda: ctx.model.log_likelihood(ctx.params, ctx.X_test, ctx.y_test),
        )
        return float(-ll.mean())


@hookimpl
def register_metrics(register: Callable[[type], None]) -> None:
    """Register the classification metrics."""
    for metric in (TrainAccuracy, TestAccuracy, TestCrossEntropy):
        register(metric)
