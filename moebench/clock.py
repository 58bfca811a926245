"""The algorithm clock: wall and CPU time of an algorithm, compilation kept apart.

A cell's budget (``budget.timeout``) is counted on one of two clocks:

- ``wall``: seconds of wall clock while the algorithm runs (metrics excluded);
- ``cpu``: seconds of CPU time of the thread that runs the algorithm (``time.thread_time``).
  On an idle machine it is close to the wall clock; on a busy one it counts only the time the
  algorithm actually got, so a timeout stops the same iteration whatever else the machine does.
  It is the default on CPU devices; on asynchronous devices (CUDA) the work happens elsewhere
  and ``wall`` is the default.

Both clocks leave out the time ``torch.compile`` spends compiling (reported apart as
``time_compile``), so a cold cache never counts against an algorithm.
"""

from __future__ import annotations

import sys
import time
from typing import Literal

ClockName = Literal["cpu", "wall"]


def compile_seconds() -> float:
    """Seconds this process has spent in ``torch.compile`` so far (0 if dynamo never ran)."""
    utils = sys.modules.get("torch._dynamo.utils")
    metrics = getattr(utils, "compilation_time_metrics", None) if utils else None
    if not metrics:
        return 0.0
    return float(sum(metrics.get("_compile.compile_inner", ())))


def default_clock(device_type: str) -> ClockName:
    """``cpu`` for CPU devices, ``wall`` for the others."""
    return "cpu" if device_type == "cpu" else "wall"


class AlgorithmClock:
    """Accumulates wall and CPU time between :meth:`start` and :meth:`stop`, minus compilation.

    Attributes
    ----------
    wall, cpu
        Seconds accumulated on each clock.
    compile
        Seconds of compilation that happened while the clock ran (not in ``wall``/``cpu``).
    """

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.compile = 0.0
        self._marks: tuple[float, float, float] | None = None

    def start(self) -> None:
        self._marks = (time.perf_counter(), time.thread_time(), compile_seconds())

    def stop(self) -> None:
        if self._marks is None:
            return
        w0, c0, k0 = self._marks
        compiled = compile_seconds() - k0
        self.compile += compiled
        self.wall += max(0.0, time.perf_counter() - w0 - compiled)
        self.cpu += max(0.0, time.thread_time() - c0 - compiled)
        self._marks = None

    def spent(self, clock: ClockName) -> float:
        """Seconds on ``clock``."""
        return self.cpu if clock == "cpu" else self.wall
