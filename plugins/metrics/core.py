"""Core metrics: parameter error, train/test negative log-likelihood and mean squared error."""

from __future__ import annotations

from collections.abc import Callable

import torch

from moebench import EvalContext, Metric, hookimpl

__all__ = ["ParamError", "HeldOutMSE", "HeldOutNLL", "TrainMSE", "TrainNLL"]


def _log_lik(ctx: EvalContext, split: str) -> torch.Tensor:
    X, y = getattr(ctx, f"X_{split}"), getattr(ctx, f"y_{split}")
    return ctx.cached(f"log_likelihood_{split}", lambda: ctx.model.log_likelihood(ctx.params, X, y))


def _prediction(ctx: EvalContext, split: str) -> torch.Tensor:
    X = getattr(ctx, f"X_{split}")
    return ctx.cached(f"predict_{split}", lambda: ctx.model.predict(ctx.params, X))


class ParamError(Metric):
    """Distance to the true parameters, minimised over permutations of the experts."""

    name = "param_error"
    summary = "distance to the true parameters, minimised over expert permutations"
    direction = "min"
    requires_truth = True

    def compute(self, ctx: EvalContext) -> float:
        """``model.parameter_error(params, truth)``."""
        assert ctx.truth is not None
        return float(ctx.model.parameter_error(ctx.params, ctx.truth))


class TrainNLL(Metric):
    """Mean negative log-likelihood on the training split."""

    name = "train_nll"
    summary = "mean negative log-likelihood on the training data"
    direction = "min"
    training_objective = True

    def compute(self, ctx: EvalContext) -> float:
        """``-mean log p(y | x)`` over the training samples."""
        return float(-_log_lik(ctx, "train").mean())


class HeldOutNLL(Metric):
    """Mean negative log-likelihood on the test split."""

    name = "test_nll"
    summary = "mean negative log-likelihood on the test data"
    direction = "min"

    def compute(self, ctx: EvalContext) -> float:
        """``-mean log p(y | x)`` over the test samples."""
        return float(-_log_lik(ctx, "test").mean())


class TrainMSE(Metric):
    """Mean squared error of the predicted mean ``E[y | x]`` on the training split."""

    name = "train_mse"
    summary = "mean squared error of E[y|x] on the training data"
    direction = "min"
    tasks = ("regression",)

    def compute(self, ctx: EvalContext) -> float:
        """``mean (y - E[y | x])^2`` over the training samples."""
        return float((ctx.y_train - _prediction(ctx, "train")).square().mean())


class HeldOutMSE(Metric):
    """Mean squared error of the predicted mean ``E[y | x]`` on the test split."""

    name = "test_mse"
    summary = "mean squared error of E[y|x] on the test data"
    direction = "min"
    tasks = ("regression",)

    def compute(self, ctx: EvalContext) -> float:
        """``mean (y - E[y | x])^2`` over the test samples."""
        return float((ctx.y_test - _prediction(ctx, "test")).square().mean())


@hookimpl
def register_metrics(register: Callable[[type], None]) -> None:
    """Register the core metrics."""
    for metric in (ParamError, TrainNLL, HeldOutNLL, TrainMSE, HeldOutMSE):
        register(metric)
