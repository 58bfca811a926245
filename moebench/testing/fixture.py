"""The algorithm kit's fixture: one small problem on one device and dtype, a fit with a
recording callback, and what that fit returned and reported."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..algorithm import Algorithm, Iterate, Problem
from ..dataset import Data
from ..device import Device
from ..model import InitSpec, Model, ParamDict
from ..seeding import torch_generator
from .harness import build_model, truth_for


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
                          self.data.input_density, init_spec=InitSpec(),
                          init_truth=truth_for(self.model, self.data))  # as the runner gives it
        start = {k: v.clone() for k, v in self.init.items()}
        result = algorithm.fit(problem, start, callback)
        after = 0 if stopped["calls"] is None else self.model_calls - stopped["calls"]
        return Run(result, log, after, start)
