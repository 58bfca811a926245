"""Where a cell runs: one algorithm fitted on a prepared unit, every report turned into a row.

:class:`CellRun` is the whole life of a cell in its worker: it builds the algorithm from the
cell's variant, hands it the unit's data and initial point and a callback, and on every report
stops the clock, evaluates the metrics, writes an ``iteration`` row and decides whether the
algorithm goes on (budget, divergence, deadline). When ``fit`` returns (or raises), it writes
the ``final`` row with the status, the message and the metrics of the returned parameters.

The budget's timeout counts on the CPU clock by default, so an algorithm that sleeps, waits or
goes on after the stop spends wall time no timeout sees: the final row then records
``wall_over_budget`` (:func:`~moebench.cell.rows.wall_over_budget`), ``time_after_stop`` and a
sentence in the message (:func:`over_budget_note`); the leaderboards mark its score.
"""

from __future__ import annotations

import math
import operator
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from .. import plugins
from ..algorithm import Algorithm, Iterate, Problem
from ..clock import AlgorithmClock, ClockName, default_clock
from ..errors import UnsupportedProblem, describe_error
from ..metric import EvalContext
from ..model import Model, ParamDict
from ..seeding import torch_generator
from .rows import (
    WALL_OVER_GRACE,
    as_scalar,
    is_out_of_memory,
    iteration_row,
    out_of_memory_message,
    result_row,
    wall_over_budget,
)
from .spec import CellSpec, cell_fields, json_text
from .unit import PreparedUnit

#: A run whose objective (a loss: lower is better) exceeds its initial value by this factor of
#: ``max(1, |initial|)`` is stopped as ``diverged`` (an unstable step size, typically).
BLOW_UP = 1e6

#: Statuses whose final parameters are evaluated (the algorithm returned them).
_RETURNED = ("done", "max_iter", "timeout")


class ReportError(TypeError):
    """An algorithm reported something a cell cannot record (e.g. a string objective)."""


class _StopIgnored(BaseException):
    """Raised in the callback of an algorithm that reports again after being told to stop
    (a ``BaseException``, so that a plugin's ``except Exception`` does not swallow it)."""


def report_float(value: Any, what: str) -> float | None:
    """A reported scalar as a Python float: 0-d tensors and numpy scalars are unwrapped."""
    if value is None:
        return None
    if getattr(value, "ndim", 0):  # a tensor or array with dimensions, even of one element
        raise ReportError(f"{what} must be a Python float (or None); the algorithm reported a "
                          f"{type(value).__name__} of shape {tuple(value.shape)}")
    scalar = as_scalar(value)
    if isinstance(scalar, bool) or not isinstance(scalar, int | float):
        raise ReportError(f"{what} must be a Python float (or None); the algorithm reported "
                          f"{type(value).__name__} {str(value)[:60]!r}")
    return float(scalar)


def _iteration_number(value: Any) -> int | None:
    """``Iterate.iteration`` as an int (numpy integers included), or ``None`` if it is none."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def returned_problem(params: Any, model: Model) -> str | None:
    """Why what ``fit`` returned cannot be the final parameters, or ``None`` if it can."""
    shapes = model.shapes()
    if not isinstance(params, dict):
        return (f"fit must return the final parameters (a dict of tensors {sorted(shapes)}); it "
                f"returned {type(params).__name__}")
    missing = sorted(set(shapes) - set(params))
    if missing:
        return f"fit returned parameters without {', '.join(missing)} (the model has " \
               f"{sorted(shapes)})"
    for name, shape in shapes.items():
        value = params[name]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return f"fit returned parameter {name!r} as {got}; the model needs shape {shape}"
    return None


def over_budget_note(wall: float, cpu: float, after_stop: float, timeout: float,
                     clock: ClockName) -> str:
    """The sentence of a cell whose wall time is far beyond its budget: how far, and where the
    time went (waiting the CPU clock does not count, reporting late, running after the stop).

    Parameters
    ----------
    wall, cpu
        The algorithm's wall time (the time after the stop included) and its CPU time.
    after_stop
        Wall seconds ``fit`` ran after the runner told it to stop (0 if never told).
    timeout
        The budget's ``timeout`` in seconds.
    clock
        The clock the timeout counts.
    """
    ratio = wall / timeout
    times = f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"
    before = wall - after_stop
    if clock == "cpu":
        head = (f"wall time {wall:.3g} s is {times} the {timeout:g} s budget, which counts CPU "
                f"time ({cpu:.3g} s)")
    else:
        head = f"wall time {wall:.3g} s is {times} the {timeout:g} s budget (wall clock)"
    spent = cpu if clock == "cpu" else before
    why = []
    if spent - timeout > WALL_OVER_GRACE:
        why.append(f"it went {spent - timeout:.3g} s of {clock} time past the budget without "
                   "reporting an iteration (the budget is checked at each report)")
    if clock == "cpu" and before - cpu > WALL_OVER_GRACE:
        why.append(f"it waited {before - cpu:.3g} s that the CPU clock does not count (sleep, "
                   "I/O, another process, or a busy machine)")
    if after_stop > WALL_OVER_GRACE:
        why.append(f"it ran {after_stop:.3g} s after the runner told it to stop (it ignored "
                   "the stop)")
    reasons = ", and ".join(why) or "it waited, reported late or ignored the stop"
    return (f"{head}: {reasons}; its times are not comparable with a cell that kept to its "
            "budget, and only the hard wall-clock limit (budget.wall_timeout, or moebench run "
            "--timeout) caps such a cell")


def run_cell(spec: CellSpec, unit: PreparedUnit, memory: int | None = None,
             deadline: float | None = None,
             on_report: Callable[[int], Any] | None = None) -> list[dict[str, Any]]:
    """Run the algorithm of ``spec`` on a prepared unit; returns the cell's rows.

    Every iteration the algorithm reports becomes an ``iteration`` row (the clock stops while
    metrics are computed); a ``final`` row carries the status, the message and the metrics of
    the returned parameters. Exceptions of the plugin, ``SystemExit`` and ``KeyboardInterrupt``
    included, become the cell's ``error`` (``crashed`` when out of memory).

    Parameters
    ----------
    spec
        The cell.
    unit
        Its prepared unit (data, model, initial point, metrics).
    memory
        The cell's memory limit in bytes, for the out-of-memory message.
    deadline
        ``time.monotonic()`` value after which the cell stops itself (status ``timeout``).
    on_report
        Called with the iteration number after each report is recorded, off the algorithm's
        clock (the worker's heartbeat: it must be cheap and must not raise).
    """
    return CellRun(spec, unit, memory, deadline, on_report).run()


class CellRun:
    """One cell's run: see :func:`run_cell`.

    The attributes are the cell's state between the algorithm's reports: ``status`` and
    ``message`` once it must stop, ``last`` (iteration, metrics) of the last report, ``next``
    the iteration number expected next, ``ignored`` reports after a stop, ``stopped_at`` (the
    ``time.perf_counter()`` of the stop) and ``after_stop`` (wall seconds ``fit`` ran after it).
    """

    def __init__(self, spec: CellSpec, unit: PreparedUnit, memory: int | None = None,
                 deadline: float | None = None,
                 on_report: Callable[[int], Any] | None = None) -> None:
        self.spec, self.unit, self.memory, self.deadline = spec, unit, memory, deadline
        self.on_report = on_report
        # the algorithm entry's own budget, else the experiment's
        self.budget = spec.experiment.budget_for(spec.algorithm)
        model = unit.model
        self.fields = {**cell_fields(spec), "model": model.name,
                       "model_params": json_text(model.params.model_dump())}
        self.rows: list[dict[str, Any]] = []
        self.status: str | None = None
        self.message: str | None = None
        self.last: tuple[int, dict[str, float]] | None = None
        self.last_extras: dict[str, float | None] = {}
        self.last_params: ParamDict | None = None
        self.objective0: float | None = None
        self.ignored = 0
        self.stopped_at: float | None = None
        self.after_stop: float | None = None
        self.over_budget = False
        self.next = 0
        self.metrics_time = 0.0
        self.clock = AlgorithmClock()
        self.clock_name = self.budget.clock or default_clock(unit.device.torch_device().type)
        self.checked: list[str] = []

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        """Fit, then write the final row; returns every row of the cell."""
        try:
            cls = plugins.get("algorithms", self.spec.algorithm.name)
            algorithm = cls(cls.Params.model_validate(self.spec.algorithm.params))
            reason = algorithm.unsupported_reason(self.unit.model)
        except Exception as exc:
            return [result_row(self.fields, {}, status="error", message=describe_error(exc))]
        if reason:
            return [result_row(self.fields, {}, status="skipped", message=reason)]
        probe = self._context(self.unit.init)
        self.checked = [m.name for m in self.unit.metrics if m.applies_to(probe)]
        final_params = self._fit(algorithm)
        values = self._final_values(final_params)
        self._add_notes(algorithm)
        for row in self.rows:
            row["status"] = self.status
        last_iter = self.last[0] if self.last else 0
        after = {} if self.after_stop is None else {"time_after_stop": self.after_stop}
        self.rows.append(result_row(
            self.fields, values, status=self.status, message=self.message, iteration=last_iter,
            time=self.clock.wall, cpu_time=self.clock.cpu, clock=self.clock_name,
            time_metrics=self.metrics_time, time_compile=self.clock.compile,
            wall_over_budget=self.over_budget, **after, **self.last_extras))
        return self.rows

    def _fit(self, algorithm: Algorithm) -> Any:
        """``algorithm.fit`` under the clock; sets the status; returns what ``fit`` returned
        (or the last reported parameters of an algorithm that ignored the stop)."""
        unit, device, exp = self.unit, self.unit.device, self.spec.experiment
        # the algorithm gets its own copies: one that writes into its inputs must not change
        # the data of the cells that follow on this worker
        problem = Problem(unit.model, unit.tensors["X_train"].clone(),
                          unit.tensors["y_train"].clone(),
                          torch_generator(self.fields["seed"], device.torch_device()),
                          unit.data.input_density, init_spec=exp.init, init_truth=unit.truth)
        start = {k: v.clone() for k, v in unit.init.items()}
        device.synchronize()
        self.clock.start()
        final_params = None
        try:
            final_params = algorithm.fit(problem, start, self.callback)
            device.synchronize()
            if self.status is None:
                self._returned()
        except _StopIgnored:
            final_params = self.last_params
        except UnsupportedProblem as exc:
            self.status, self.message = "skipped", str(exc)
        except ReportError as exc:
            self.status, self.message = "error", str(exc)
        except BaseException as exc:  # a plugin's SystemExit or KeyboardInterrupt: its cell only
            if is_out_of_memory(exc):
                self.status, self.message = "crashed", out_of_memory_message(exc, self.memory)
            else:
                self.status = "error"
                self.message = f"{describe_error(exc)}\n{traceback.format_exc(limit=6)}"
        if self.stopped_at is not None:  # wall time the algorithm ignored the stop for
            self.after_stop = max(0.0, time.perf_counter() - self.stopped_at)
        return final_params

    def _returned(self) -> None:
        """``fit`` returned without being stopped: ``done``, or ``timeout`` past the budget."""
        self.clock.stop()
        spent, timeout = self.clock.spent(self.clock_name), self.budget.timeout
        if timeout is not None and spent > timeout:
            self.status = "timeout"
            self.message = (f"the algorithm returned after {spent:.3g} s of {self.clock_name} "
                            f"time without reporting in time (budget {timeout} s)")
        else:
            self.status = "done"

    # -- the callback -----------------------------------------------------------------------

    def callback(self, it: Iterate) -> bool:
        """The algorithm's callback: record ``it``; ``False`` tells it to stop."""
        if self.status is not None:  # told to stop already: neither timed nor recorded
            self.ignored += 1
            raise _StopIgnored
        go_on = self._record(it)
        if not go_on:  # kept in case the algorithm ignores the stop and must be aborted
            self.last_params = {k: v.detach().clone() for k, v in it.params.items()}
            self.stopped_at = time.perf_counter()
        return go_on

    def _record(self, it: Iterate) -> bool:
        if _iteration_number(it.iteration) != self.next:
            raise ReportError(f"Iterate.iteration must count 0, 1, 2, ... (one per report; "
                              f"restarts keep counting): expected {self.next}, the "
                              f"algorithm reported {it.iteration!r}")
        self.next += 1
        device = self.unit.device
        device.synchronize()
        self.clock.stop()
        objective = report_float(it.objective, "Iterate.objective")
        extras = {f"extra.{k}": report_float(v, f"Iterate.extras[{k!r}]")
                  for k, v in it.extras.items()}
        self.last_extras = extras  # the final row carries the last report's extras too
        values = self._timed_evaluate(it.params)
        self.rows.append(iteration_row(self.fields, int(it.iteration), time=self.clock.wall,
                                       cpu_time=self.clock.cpu, objective=objective,
                                       values=values, extras=extras))
        self.last = (int(it.iteration), values)
        if self.on_report is not None:  # the clock is stopped
            self.on_report(int(it.iteration))
        self.status, self.message = self._stop_reason(it.iteration, objective, values)
        if self.status is not None:
            return False
        device.synchronize()
        self.clock.start()
        return True

    def _stop_reason(self, iteration: int, objective: float | None,
                     values: dict[str, float]) -> tuple[str | None, str | None]:
        """``(status, message)`` when the cell must stop after this report, else two ``None``."""
        bad = [n for n in self.checked if not math.isfinite(values[n])]
        if objective is not None and not math.isfinite(objective):
            bad.insert(0, "objective")
        if bad:
            return "diverged", f"non-finite {', '.join(bad)} at iteration {iteration}"
        if objective is not None:
            if self.objective0 is None:
                self.objective0 = objective
            start = self.objective0
            if objective > start + BLOW_UP * max(1.0, abs(start)):
                return "diverged", (f"objective blew up: {objective:.3g} at iteration "
                                    f"{iteration}, from {start:.3g} at iteration 0")
        if iteration >= self.budget.max_iter:
            return "max_iter", None
        spent, clock = self.clock.spent(self.clock_name), self.clock_name
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "timeout", (f"stopped near the hard wall-clock limit at iteration "
                               f"{iteration} ({spent:.3g} s of {clock} time)")
        if self.budget.timeout is not None and spent >= self.budget.timeout:
            return "timeout", (f"stopped after {spent:.3g} s of {clock} time (budget "
                               f"{self.budget.timeout} s) at iteration {iteration}")
        return None, None

    # -- metrics ----------------------------------------------------------------------------

    def _context(self, params: ParamDict) -> EvalContext:
        t, unit = self.unit.tensors, self.unit
        return EvalContext(unit.model, params, t["X_train"], t["y_train"], t["X_test"],
                           t["y_test"], unit.truth, unit.data.meta)

    def _timed_evaluate(self, params: ParamDict) -> dict[str, float | None]:
        """Every metric at ``params``; the seconds it took count as ``time_metrics``."""
        t = time.perf_counter()
        try:
            ctx = self._context(params)
            return {m.name: report_float(m(ctx), f"metric {m.name!r}") for m in self.unit.metrics}
        finally:
            self.metrics_time += time.perf_counter() - t

    def _final_values(self, final_params: Any) -> dict[str, Any]:
        """The metrics of the returned parameters (or of the last report); may turn the status
        into ``error`` or ``diverged``."""
        if self.status in _RETURNED:
            problem = returned_problem(final_params, self.unit.model)
            if problem is not None:
                self.status, self.message = "error", problem
                final_params = None
        values: dict[str, Any] = {}
        if self.status in _RETURNED and final_params is not None:
            try:
                values = self._timed_evaluate(final_params)
            except Exception as exc:
                self.status = "error"
                self.message = f"evaluating metrics failed: {describe_error(exc)}"
            if self.status == "done" and any(not math.isfinite(values[n]) for n in self.checked):
                self.status, self.message = "diverged", "non-finite metric at the final parameters"
        elif self.last is not None:
            values = self.last[1]
        return values

    def _add_notes(self, algorithm: Algorithm) -> None:
        """Append what else the cell's message must say (wall time far beyond the budget,
        ignored stop, no test split, the algorithm's own notes)."""
        notes: list[str] = []
        wall, timeout = self.clock.wall + (self.after_stop or 0.0), self.budget.timeout
        if timeout is not None and wall_over_budget(wall, timeout):
            self.over_budget = True
            notes.append(over_budget_note(wall, self.clock.cpu, self.after_stop or 0.0,
                                          timeout, self.clock_name))
        if self.ignored:
            notes.append("the algorithm reported another iteration after the runner said stop; "
                         "it was stopped by an exception raised in its callback (final metrics: "
                         "the last reported parameters)")
        unit = self.unit
        absent = [] if unit.data.has_test else [m.name for m in unit.metrics
                                                if m.reads_test_split()]
        if absent:
            notes.append(f"no test split (the dataset trains on every row): {', '.join(absent)} "
                         "absent")
        notes += [str(n) for n in getattr(algorithm, "notes", None) or []]  # Algorithm.note()
        for note in notes:
            self.message = f"{self.message}; {note}" if self.message else note
