"""An oracle reference, not a competitor: the maximum-likelihood estimate nearest the truth.

``mle-from-truth`` runs joint EM (:func:`~moebench_plugins.algorithms.joint_em.run_em`) from the
dataset's ground truth instead of from the cell's ``init``, with a tight stopping rule, so that
it stops at the local maximum of the likelihood whose basin holds the truth: for a well-posed
problem, the maximum-likelihood estimate (MLE) a consistent estimator converges to. Its
``param_error`` at the end is therefore the distance from the truth to the finite-sample MLE,
the floor that any algorithm which *converges* to the MLE cannot beat on parameter error, and
its ``train_nll`` the NLL of that optimum.

Reading the truth is what every other algorithm is forbidden to do (``Problem.init_truth`` is
reserved for :meth:`~moebench.Problem.draw_init`): this algorithm reads it on purpose, to
measure the estimation error of the MLE itself (e.g. to explain why EM's parameter error rises
while its NLL falls, issue 22). It belongs in a suite as a labelled reference line, never in a
claim that it "beats" anything. On data without a ground truth (real data) there is nothing to
start from, and its cells are ``skipped``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field

from moebench import Callback, InitSpec, Model, ParamDict, Problem, hookimpl
from moebench.errors import UnsupportedProblem

from .joint_em import JointEM, JointEMParams, run_em

__all__ = ["MLEFromTruth", "MLEFromTruthParams"]


class MLEFromTruthParams(JointEMParams):
    """Joint EM's parameters with a tighter default ``tol``.

    ``tol = 1e-13``
        Near the optimum the NLL decrease is quadratic in the step, so a relative decrease of
        ``tol`` leaves steps of about ``sqrt(tol)``: ``1e-13`` stops where one more EM step moves
        the parameters by well under ``1e-6`` (in float64; in float32 EM stops once the decrease
        is below rounding).
    """

    tol: float = Field(
        1e-13, ge=0, description="stop when the relative decrease of the training NLL falls "
        "below tol (0 disables); tight, so that the result is the maximum likelihood itself"
    )


class MLEFromTruth(JointEM):
    """Oracle reference: joint EM started at the ground truth, run to convergence.

    **Not a competitor.** It ignores ``init`` and reads ``problem.init_truth``, which algorithms
    must not read: iteration 0 reports the truth, later iterations the EM iterates from it, and
    the result is the maximum-likelihood estimate nearest the truth. Its ``param_error`` is the
    distance from the truth to that MLE (the error of the estimator, not of an optimiser), its
    ``train_nll`` the optimum's NLL. Raises :class:`~moebench.errors.UnsupportedProblem` (the
    cell is ``skipped``) when the data has no ground truth in the model's layout.
    """

    name = "mle-from-truth"
    summary = ("oracle reference, not a competitor: joint EM from the ground truth, i.e. the "
               "MLE nearest the truth (its param_error is the MLE's own error)")
    Params = MLEFromTruthParams

    @torch.no_grad()
    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Run joint EM from the truth (``init`` is not used) until it converges.

        Raises
        ------
        UnsupportedProblem
            The problem carries no ground truth (real data, or a model family other than the
            one that generated the data).
        """
        if problem.init_truth is None:
            raise UnsupportedProblem(
                f"{self.name} is an oracle reference that starts at the ground truth; this "
                "data has none (real data, or a model family other than the generating one)")
        start = truth_start(problem.model, problem.init_truth, problem.generator)
        return run_em(self, problem, start, callback, eta=1.0,
                      final_gate=self.params.final_gate_options())


def truth_start(model: Model, truth: ParamDict, generator: torch.Generator) -> ParamDict:
    """The ground truth as starting parameters: the ``near-truth`` scheme with radius 0.

    Parameters
    ----------
    model
        The family fitted (its ``init_params`` puts the truth in its layout, device and dtype).
    truth
        Ground-truth parameters in the model's layout.
    generator
        Passed to ``init_params``; a radius of 0 adds nothing, whatever it draws.

    Returns
    -------
    ParamDict
        Fresh tensors on the model's device and dtype.
    """
    params = model.init_params(InitSpec(scheme="near-truth", radius=0.0), generator, truth)
    return {k: v.to(model.device, model.dtype) for k, v in params.items()}


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`MLEFromTruth`."""
    register(MLEFromTruth)
