"""The ``Algorithm`` interface and the per-iteration callback protocol.

The contract between an algorithm and the runner (enforced where each cell runs,
:class:`moebench.cell.compute.CellRun`, and checked by :func:`moebench.testing.check_algorithm`):

1. ``fit(problem, init, callback)`` starts from ``init`` and must not modify it (nor the
   tensors of ``problem``).
2. It reports ``callback(Iterate(0, params, objective))`` once before its first step, then
   ``Iterate(t, ...)`` after every step with ``t = 1, 2, 3, ...`` (consecutive: one call per
   step; an algorithm with restarts keeps counting across restarts). The runner's ``max_iter``
   counts these reports and its ``timeout`` is checked at each, so report regularly. One
   iteration is one pass over the training data: a mini-batch or online method reports once
   per epoch (``n`` samples processed), with its number of updates in ``extras``, so that
   iterations and time per iteration compare across algorithms.
3. ``Iterate.objective`` is a finite Python ``float`` or ``None``: the mean training NLL, or the
   loss the algorithm itself monitors, lower being better (the runner stops a run whose objective
   becomes non-finite or grows by a factor of 10^6 as ``diverged``). The rule is Python floats
   (the conformance kit fails anything else); the runner alone is lenient and converts 0-d
   tensors and numpy scalars, so that a run keeps the cell; a string or a vector fails it.
   ``Iterate.extras`` maps names to scalar floats (recorded as ``extra.<name>`` columns).
4. The tensors in ``Iterate.params`` belong to the callback from then on: the algorithm must not
   modify them afterwards (clone before updating in place). A callback may keep references
   (the conformance kit does) without copying.
5. When the callback returns ``False`` (budget exhausted, divergence), ``fit`` returns at once,
   without further computation on the data: no further step, no further callback.
6. ``fit`` returns the final parameters (a dict with the model's names and shapes, on the run's
   device); the final metrics of the cell are computed on *these*, not on the last reported
   ones. Usually they are the last reported parameters.
7. Returning before the callback said stop means "converged by my own criterion": the cell's
   status is ``done`` (``max_iter`` or ``timeout`` when the runner stopped it). The cell's final
   row carries the extras of the last report, and :meth:`Algorithm.note` adds remarks to its
   message.
8. ``problem.generator`` is the only randomness: two fits with generators seeded alike give
   identical results.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .density import GaussianMixtureDensity
from .model import InitSpec, Model, ParamDict
from .params import NoParams, Params


@dataclass
class Iterate:
    """What an algorithm reports after an iteration.

    Attributes
    ----------
    iteration
        0 for the initial point, then 1, 2, ... (consecutive, one per reported step).
    params
        Current parameters (not copied: the callback must not modify them, and the algorithm
        must not modify them after reporting them).
    objective
        A finite Python float or ``None``: the mean training NLL, or the loss the algorithm
        itself monitors (lower is better).
    extras
        Further diagnostics, each a scalar float (step size, KL divergence of the step, ...).
    """

    iteration: int
    params: ParamDict
    objective: float | None = None
    extras: dict[str, float] = field(default_factory=dict)


Callback = Callable[[Iterate], bool]


@dataclass
class Problem:
    """What an algorithm is given: a model family, training data and randomness.

    Attributes
    ----------
    model
        The family to fit, on the run's device and dtype.
    X, y
        Training inputs ``(n, d)`` and targets ``(n,)`` on the model's device.
    generator
        The only source of randomness an algorithm may use (seeded by the runner, on the run's
        device: draw with ``torch.rand(..., generator=g, device=g.device)``).
    input_density
        The density of the inputs when the dataset knows it (score-function methods); ``None``
        when unknown.
    init_spec
        The experiment's ``init`` settings (scheme, scale, radius), from which ``init`` was
        drawn. An algorithm that makes its own starting points (restarts) draws them with
        :meth:`draw_init`, which follows this spec.
    init_truth
        Reserved for :meth:`draw_init` (the ground truth that the ``near-truth`` scheme
        perturbs; ``None`` when the data has none). Algorithms must not read it (the
        one exception is the oracle reference ``mle-from-truth``, which is no competitor).
    """

    model: Model
    X: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    input_density: GaussianMixtureDensity | None = None
    init_spec: InitSpec = field(default_factory=InitSpec)
    init_truth: ParamDict | None = field(default=None, repr=False)

    def draw_init(self, generator: torch.Generator | None = None) -> ParamDict:
        """A new starting point drawn like ``init``: ``model.init_params(init_spec, ...)``.

        Parameters
        ----------
        generator
            The randomness to use (default: :attr:`generator`, so that restarts are
            reproducible).

        Returns
        -------
        ParamDict
            Fresh tensors on the model's device and dtype.
        """
        gen = self.generator if generator is None else generator
        params = self.model.init_params(self.init_spec, gen, self.init_truth)
        return {k: v.to(self.model.device, self.model.dtype) for k, v in params.items()}


class Algorithm(ABC):
    """A method that fits a :class:`Model` to data.

    Subclasses set ``name``, ``summary`` and ``Params`` and implement :meth:`fit`; they may
    override :meth:`unsupported_reason` to decline model families they cannot fit. The contract
    of :meth:`fit` with its callback is numbered in this module's docstring (and in
    docs/plugins.md); ``moebench.testing.check_algorithm(name)`` checks it.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = NoParams

    def __init__(self, params: Params | None = None):
        self.params = params if params is not None else self.Params()
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """Add a remark to the cell's final message (e.g. "phase 2 did not run").

        The runner appends every note to the message of the cell's ``final`` row; use it for
        what a reader of the results must know but a float in ``extras`` cannot say.
        """
        self.notes.append(text)

    def unsupported_reason(self, model: Model) -> str | None:
        """``None`` if this algorithm can fit ``model``, else why not (cells are skipped)."""
        return None

    @abstractmethod
    def fit(self, problem: Problem, init: ParamDict, callback: Callback) -> ParamDict:
        """Fit from ``init``, calling ``callback`` at iteration 0 and after every step.

        Parameters
        ----------
        problem
            Model family, training data, generator and init settings.
        init
            Starting parameters; must not be modified.
        callback
            Receives an :class:`Iterate` at iteration 0 and after every step (iterations
            ``0, 1, 2, ...``; ``objective`` a finite float or ``None``; ``extras`` scalar
            floats). Reported tensors must not be modified afterwards. When it returns
            ``False``, return at once, computing nothing more.

        Returns
        -------
        ParamDict
            The final parameters (the model's names and shapes, on its device): the cell's
            final metrics are computed on them. Returning before the callback said stop means
            converged (status ``done``).
        """
