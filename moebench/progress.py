"""Progress of ``moebench run``: what is running, and an ETA that knows what cells cost.

On a terminal: a rich progress bar naming the experiment, dataset and algorithm of the cells in
flight. Otherwise (CI, ``nohup``, a pipe): a plain line every ``interval`` seconds and at every
10 % of the cells, so a log shows progress through the whole run.

The ETA sums an estimate for each remaining cell: the mean cost (algorithm time, metrics and
data loading, as the cells report them) of finished cells of the same experiment and algorithm,
else of the same experiment, else of all finished cells; divided by the number of workers. Cells
kept by ``--resume`` are not run again, but what they cost informs the estimate.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: Columns of a final row that add up to what a cell cost (those present are summed).
COST_COLUMNS = ("time", "time_metrics", "time_data")


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class CellCosts:
    """Running means of cell costs, per (experiment, algorithm) and per experiment."""

    def __init__(self, plan: list[tuple[str, str, str]], jobs: int = 1):
        self.remaining = Counter(plan)  # (experiment, dataset, algorithm) -> cells left
        self.jobs = max(1, jobs)
        self.sums: dict[Any, list[float]] = defaultdict(lambda: [0.0, 0])

    def finished(self, row: dict[str, Any]) -> None:
        key = (str(row.get("experiment")), str(row.get("dataset")), str(row.get("algorithm")))
        if self.remaining[key] > 0:
            self.remaining[key] -= 1
        cost = 0.0
        for column in COST_COLUMNS:
            value = row.get(column)
            if isinstance(value, int | float) and math.isfinite(value):
                cost += float(value)
        for k in ((key[0], key[2]), key[0], None):
            self.sums[k][0] += cost
            self.sums[k][1] += 1

    def _mean(self, key: Any) -> float | None:
        total, n = self.sums.get(key, (0.0, 0))
        return total / n if n else None

    def eta(self) -> float | None:
        """Seconds left, or ``None`` before any cell finished."""
        if self._mean(None) is None:
            return None
        left = 0.0
        for (exp, _ds, alg), n in self.remaining.items():
            if n:
                cost = self._mean((exp, alg))
                cost = cost if cost is not None else self._mean(exp)
                cost = cost if cost is not None else self._mean(None)
                left += n * cost
        return left / self.jobs

    def eta_text(self) -> str:
        """The ETA as ``H:MM:SS``, ``>= H:MM:SS`` while some experiment with cells left has
        no finished cell to estimate them from, ``?`` before any cell finished."""
        seconds = self.eta()
        if seconds is None:
            return "?"
        unknown = any(n and self._mean(exp) is None
                      for (exp, _ds, _alg), n in self.remaining.items())
        return (">= " if unknown else "") + _clock(seconds)

    def in_flight(self) -> str:
        """The first configuration with cells left (cells run in this order)."""
        for (exp, ds, alg), n in self.remaining.items():
            if n:
                return f"{exp} · {ds} · {alg}"
        return "finishing"


class RunProgress:
    """Progress display for a run; use as a context manager and pass :meth:`on_cell` and
    :meth:`progress` to :func:`moebench.runner.run_suite`.

    Parameters
    ----------
    plan
        ``(experiment, dataset, algorithm)`` of every cell, in the order they are scheduled.
    console
        Where to write (stderr).
    jobs
        Workers running cells at once.
    mode
        ``"bar"``, ``"lines"`` or ``"auto"`` (a bar on a terminal, lines otherwise), or
        ``"none"``.
    interval
        Seconds between plain lines (also one line per 10 % of the cells).
    """

    def __init__(self, plan: list[tuple[str, str, str]], console: Console, jobs: int = 1,
                 mode: str = "auto", interval: float = 30.0, title: str = ""):
        self.costs = CellCosts(plan, jobs)
        self.total = len(plan)
        self.done = 0
        self.console = console
        self.title = title
        if mode == "auto":
            mode = "bar" if console.is_terminal else "lines"
        self.mode = mode
        self.interval = interval
        self.start = time.monotonic()
        self._bar: Progress | None = None
        self._task: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_decile = 0
        self._lock = threading.Lock()

    def __enter__(self) -> RunProgress:
        if self.mode == "bar":
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                TextColumn("[dim]{task.fields[now]}"), console=self.console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(escape(self.title), total=self.total, eta="?",
                                            now="starting")
        elif self.mode == "lines":
            self._line("started")
            self._thread = threading.Thread(target=self._ticker, daemon=True,
                                            name="moebench-progress")
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif self.mode == "lines" and exc[0] is None:
            self._line("finished")

    def _ticker(self) -> None:
        while not self._stop.wait(self.interval):
            self._line()

    def status(self) -> str:
        elapsed = time.monotonic() - self.start
        share = f"{100 * self.done / self.total:.0f} %" if self.total else "-"
        return (f"{self.done}/{self.total} cells ({share}), elapsed {_clock(elapsed)}, "
                f"ETA {self.costs.eta_text()}, now {self.costs.in_flight()}")

    def _line(self, what: str | None = None) -> None:
        with self._lock:
            text = f"{self.title}: {what or self.status()}"
            self.console.print(escape(text), highlight=False, soft_wrap=True)

    def on_cell(self, row: dict[str, Any]) -> None:
        """A cell was reported (its final row)."""
        self.costs.finished(row)

    def progress(self, done: int, total: int) -> None:
        """``(cells done, cells in all)`` after each cell."""
        self.done, self.total = done, total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total,
                             eta=self.costs.eta_text(), now=escape(self.costs.in_flight()))
        elif self.mode == "lines" and total:
            decile = int(10 * done / total)
            if decile > self._last_decile:
                self._last_decile = decile
                self._line()
