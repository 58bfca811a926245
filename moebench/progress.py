"""Progress of ``moebench run``: what is running, and an ETA that knows what cells cost.

On a terminal: a rich progress bar (title, bar, cells done, elapsed, ETA; the counts stay
visible at 80 columns, a long title is shortened) and, below it, one line per cell in flight
with its iteration and elapsed time. Otherwise (CI, ``nohup``, a pipe): a plain line at every
10 % of the cells and, ``interval`` seconds after the last line, a periodic one naming the
longest-running cell in flight with its iteration, so a log shows progress through the whole
run, long cells included; a periodic line that says nothing new (only the run's elapsed time
changed) is not printed.

A cell is named the same way everywhere: ``experiment · dataset · algorithm seed N`` (the
experiment only when the run has several), then ``: iteration 37/100, 2:14 elapsed, ~3:41
left`` or, before its first reported iteration, ``, 0:03 elapsed``. While no heartbeat names a
cell in flight, the line names the configuration that comes ``next``.

The cells in flight are read from their heartbeat files (:mod:`moebench.execution.heartbeat`).

The ETA sums an estimate for each remaining cell: for a cell in flight, what its iteration rate
leaves until ``max_iter`` (else the mean cost of its configuration minus its elapsed time); for
a queued cell, the mean cost (algorithm time, metrics and data loading, as the cells report
them) of finished cells of the same experiment and algorithm, else of the same experiment, else
the projected cost of a cell of the same configuration in flight; divided by the number of
workers, and never less than the longest cell in flight has left. A cell with none of these
counts as nothing, which makes the sum a lower bound (``>= H:MM:SS``); a lower bound under one
second, or no estimate at all, is ``?``. Cells kept by ``--resume`` are not run again, but what
they cost informs the estimate.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from .execution.heartbeat import BEAT_INTERVAL, InFlight, inflight_folder, read_heartbeats

#: Columns of a final row that add up to what a cell cost (those present are summed).
COST_COLUMNS = ("time", "time_metrics", "time_data")
#: Cells in flight the bar lists (the longest-running first); more are counted.
BAR_CELLS = 4
#: Seconds between plain lines, unless ``$MOEBENCH_PROGRESS_INTERVAL`` says otherwise.
LINE_INTERVAL = 30.0


def line_interval() -> float:
    """Seconds between plain progress lines: ``$MOEBENCH_PROGRESS_INTERVAL`` (a positive
    number; a short one for a log that follows long cells closely), else
    :data:`LINE_INTERVAL`."""
    try:
        seconds = float(os.environ.get("MOEBENCH_PROGRESS_INTERVAL", ""))
    except ValueError:
        return LINE_INTERVAL
    return seconds if math.isfinite(seconds) and seconds > 0 else LINE_INTERVAL


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _duration(seconds: float) -> str:
    """``M:SS`` under an hour, ``H:MM:SS`` from one."""
    whole = int(round(seconds))
    return _clock(whole) if whole >= 3600 else f"{whole // 60}:{whole % 60:02d}"


def cell_name(cell: InFlight, experiment: bool = False) -> str:
    """``dataset · algorithm seed N`` (with ``experiment``, the experiment's name first)."""
    parts = [cell.dataset, f"{cell.algorithm} seed {cell.repetition}"]
    return " · ".join([cell.experiment, *parts] if experiment else parts)


def describe_cell(cell: InFlight, now: float, experiment: bool = False,
                  width: int | None = None) -> str:
    """One cell in flight, e.g. ``fashion-mnist · em seed 0: iteration 37/100, 2:14 elapsed,
    ~3:41 left``, or ``fashion-mnist · em seed 0, 0:03 elapsed`` before it reported an
    iteration (with ``experiment``, the experiment's name first; with ``width``, the cell's
    name is shortened so that the whole fits in ``width`` characters, its iteration kept)."""
    where = cell_name(cell, experiment)
    what = f"{_duration(cell.elapsed(now))} elapsed"
    if cell.iteration is None:
        separator = ", "
    else:
        separator = ": "
        total = f"/{cell.max_iter}" if cell.max_iter else ""
        what = f"iteration {cell.iteration}{total}, {what}"
        left = cell.seconds_left(now)
        what = what if left is None else f"{what}, ~{_duration(left)} left"
    room = None if width is None else max(8, width - len(what) - len(separator))
    if room is not None and len(where) > room:
        where = where[:room - 1] + "…"
    return f"{where}{separator}{what}"


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

    def _configuration_mean(self, experiment: str, algorithm: str) -> float | None:
        cost = self._mean((experiment, algorithm))
        return cost if cost is not None else self._mean(experiment)

    def estimate(self, inflight: Sequence[InFlight] = (),
                 now: float | None = None) -> tuple[float | None, bool]:
        """``(seconds left, whether some cells had no estimate)``; ``None`` seconds when no
        cell has an estimate. ``inflight``: the cells running now (heartbeats)."""
        now = time.time() if now is None else now
        queued = Counter({key: n for key, n in self.remaining.items() if n})
        if not queued:  # every cell finished
            return (None if self._mean(None) is None else 0.0), False
        running: list[float] = []
        projected: dict[Any, list[float]] = defaultdict(list)
        unknown = False
        for cell in inflight:
            key = cell.plan_key
            if queued[key] <= 0:
                continue  # reported already (its file is being removed)
            queued[key] -= 1
            elapsed, left = cell.elapsed(now), cell.seconds_left(now)
            if left is not None:
                for k in ((key[0], key[2]), key[0]):
                    projected[k].append(elapsed + left)
            else:
                mean = self._configuration_mean(key[0], key[2])
                left = mean - elapsed if mean is not None and mean > elapsed else None
            if left is None:
                unknown = True
            else:
                running.append(left)
        work, known = sum(running), bool(running)
        for (exp, _ds, alg), n in queued.items():
            if n <= 0:
                continue
            cost = self._configuration_mean(exp, alg)
            seen = projected.get((exp, alg)) or projected.get(exp)
            if cost is None and seen:
                cost = sum(seen) / len(seen)
            if cost is None:  # nothing to go on (another experiment's cells are no bound)
                unknown = True
            else:
                work, known = work + n * cost, True
        if not known:
            return None, unknown
        return max(max(running, default=0.0), work / self.jobs), unknown

    def eta(self, inflight: Sequence[InFlight] = (), now: float | None = None) -> float | None:
        """Seconds left, or ``None`` while no cell has an estimate (see :meth:`estimate`)."""
        return self.estimate(inflight, now)[0]

    def eta_text(self, inflight: Sequence[InFlight] = (), now: float | None = None) -> str:
        """The ETA as ``H:MM:SS``; ``>= H:MM:SS`` while some cell left has nothing to estimate
        it from (no finished cell of its experiment, no iteration rate), what the others have
        left being a lower bound; ``?`` while no cell has an estimate or that bound is under a
        second (never ``>= 0:00:00``)."""
        seconds, unknown = self.estimate(inflight, now)
        if seconds is None or (unknown and round(seconds) < 1):
            return "?"
        return (">= " if unknown else "") + _clock(seconds)

    def in_flight(self) -> str:
        """The first configuration with cells left (cells run in this order)."""
        for (exp, ds, alg), n in self.remaining.items():
            if n:
                return f"{exp} · {ds} · {alg}"
        return "finishing"


class _EtaColumn(ProgressColumn):
    """``ETA ...`` of the run, computed when the bar is drawn (it moves between cells)."""

    def __init__(self, owner: RunProgress) -> None:
        super().__init__(table_column=Column(no_wrap=True))
        self.owner = owner

    def render(self, task: Task) -> Text:
        return Text(f"ETA {self.owner.eta_text()}")


class _Bar(Progress):
    """The progress bar, with a line per cell in flight below it."""

    def __init__(self, owner: RunProgress, *columns: Any, **options: Any) -> None:
        self.owner = owner  # before the base class draws the first frame
        super().__init__(*columns, **options)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        yield from self.owner.cell_lines()


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
        Seconds from a plain line to the next periodic one (also one line per 10 % of the
        cells); ``None``: :func:`line_interval`.
    title
        The run's name (the suite's).
    run_folder
        The run's results folder, whose heartbeat files name the cells in flight
        (``None``: the display only knows which configuration comes next).
    clock
        The wall clock (``time.time``), against which the heartbeats' times are read.
    """

    def __init__(self, plan: list[tuple[str, str, str]], console: Console, jobs: int = 1,
                 mode: str = "auto", interval: float | None = None, title: str = "",
                 run_folder: str | Path | None = None,
                 clock: Callable[[], float] = time.time):
        self.costs = CellCosts(plan, jobs)
        self.total = len(plan)
        self.done = 0
        self.console = console
        self.title = title
        if mode == "auto":
            mode = "bar" if console.is_terminal else "lines"
        self.mode = mode
        self.interval = line_interval() if interval is None else interval
        self.clock = clock
        self.start = clock()
        self.heartbeats = None if run_folder is None else inflight_folder(run_folder)
        self.several_experiments = len({exp for exp, _ds, _alg in plan}) > 1
        self._cells: list[InFlight] = []
        self._read_at = -math.inf
        self._bar: Progress | None = None
        self._task: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_decile = 0
        self._due = self.start + self.interval  # the next periodic line
        self._said: Any = None  # what the last line said, the run's elapsed time aside
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()

    def __enter__(self) -> RunProgress:
        if self.mode == "bar":
            title = Column(no_wrap=True, overflow="ellipsis",
                           max_width=max(12, self.console.width // 3))
            self._bar = _Bar(
                self, TextColumn("[bold]{task.description}", table_column=title),
                BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=4)),
                MofNCompleteColumn(table_column=Column(no_wrap=True)),
                TimeElapsedColumn(table_column=Column(no_wrap=True)), _EtaColumn(self),
                console=self.console, transient=False, expand=True, refresh_per_second=4)
            self._bar.__enter__()
            self._task = self._bar.add_task(escape(self.title), total=self.total)
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
        while not self._stop.wait(min(self.interval, max(0.01, self._due - self.clock()))):
            self.tick()

    def tick(self) -> None:
        """The periodic plain line, once :attr:`interval` seconds have passed since the last
        line (of any kind), unless it would say what the last line said (the run's elapsed
        time aside). The ``lines`` mode's thread calls it."""
        if self.clock() >= self._due:
            self._line(periodic=True)

    def in_flight(self) -> list[InFlight]:
        """The cells in flight, longest-running first (the heartbeat folder is read at most
        every :data:`~moebench.execution.heartbeat.BEAT_INTERVAL` seconds)."""
        with self._read_lock:
            if self.done >= self.total > 0:
                return []
            if self.clock() - self._read_at >= BEAT_INTERVAL:
                self._cells = read_heartbeats(self.heartbeats)
                self._read_at = self.clock()
            return self._cells

    def eta_text(self) -> str:
        """The run's ETA (:meth:`CellCosts.eta_text`) with the cells in flight now."""
        return self.costs.eta_text(self.in_flight(), self.clock())

    def next_text(self) -> str:
        """``next <experiment · dataset · algorithm>``: the first configuration with cells
        left, while no cell is known to be in flight; ``all cells done`` at the end."""
        if self.done >= self.total:
            return "all cells done"
        return f"next {self.costs.in_flight()}"

    def now_text(self) -> str:
        """``now`` and the longest-running cell in flight (and how many others run), else
        :meth:`next_text`."""
        cells = self.in_flight()
        if not cells:
            return self.next_text()
        text = describe_cell(cells[0], self.clock(), self.several_experiments)
        return f"now {text}" + (f" (+{len(cells) - 1} more in flight)" if len(cells) > 1
                                else "")

    def cell_lines(self) -> list[Text]:
        """The bar's lines below it: one per cell in flight (at most :data:`BAR_CELLS`)."""
        cells, now = self.in_flight(), self.clock()
        width = self.console.width - 2
        lines = [Text(f"  {describe_cell(c, now, self.several_experiments, width)}",
                      style="dim", no_wrap=True, overflow="ellipsis") for c in cells[:BAR_CELLS]]
        if len(cells) > BAR_CELLS:
            lines.append(Text(f"  and {len(cells) - BAR_CELLS} more in flight", style="dim"))
        if not cells and self.done < self.total:
            lines.append(Text(f"  {self.next_text()}", style="dim", no_wrap=True,
                              overflow="ellipsis"))
        return lines

    def _status(self) -> tuple[str, str, str]:
        """(cells done, elapsed, what follows: the ETA and the cell in flight)."""
        share = f"{100 * self.done / self.total:.0f} %" if self.total else "-"
        counts = f"{self.done}/{self.total} cells ({share})"
        rest = (self.next_text() if self.done >= self.total
                else f"ETA {self.eta_text()}, {self.now_text()}")
        return counts, f"elapsed {_clock(self.clock() - self.start)}", rest

    def status(self) -> str:
        """The plain line's text after the title, e.g. ``3/10 cells (30 %), elapsed
        0:01:02, ETA 0:02:10, now fashion-mnist · em seed 0: iteration 37/100, ...``."""
        return ", ".join(self._status())

    def _line(self, what: str | None = None, periodic: bool = False) -> None:
        with self._lock:
            counts, elapsed, rest = (what, "", "") if what else self._status()
            said = (counts, rest)
            self._due = self.clock() + self.interval
            if periodic and said == self._said:
                return
            self._said = said
            text = ", ".join(part for part in (counts, elapsed, rest) if part)
            self.console.print(escape(f"{self.title}: {text}"), highlight=False,
                               soft_wrap=True)

    def on_cell(self, row: dict[str, Any]) -> None:
        """A cell was reported (its final row)."""
        self.costs.finished(row)
        self._read_at = -math.inf  # its heartbeat is gone: read the folder again

    def progress(self, done: int, total: int) -> None:
        """``(cells done, cells in all)`` after each cell."""
        self.done, self.total = done, total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
        elif self.mode == "lines" and total:
            decile = int(10 * done / total)
            if decile > self._last_decile:
                self._last_decile = decile
                self._line()
