"""Progress during a run: the cells in flight report their iteration and elapsed time through
heartbeat files, the display shows them (bar at 80 columns, plain lines in a pipe) and
estimates what is left from their iteration rate; the summary is not wrapped in a file."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import fake_distribution
from rich.console import Console

from moebench import plugins
from moebench.execution import heartbeat as hb
from moebench.execution.heartbeat import Heartbeat, InFlight, inflight_folder, read_heartbeats
from moebench.execution.store import read_cell_lines
from moebench.progress import CellCosts, RunProgress, describe_cell
from moebench.runner import run_suite
from moebench.suite import parse_suite

ROOT = Path(__file__).resolve().parents[2]

LONG_EXPERIMENT = "fashion-mnist-classification-with-a-long-experiment-name"
LONG_DATASET = "fashion-mnist-with-a-long-dataset-identifier"
LONG_ALGORITHM = "tensor-em-refine[eta=0.5,lr=0.1,momentum=0.9]"


def fake_cell(folder: Path, *, iteration: int | None = 37, elapsed: float = 134.0,
              iterating: float = 130.0, key: str = "cell", experiment: str = "fashion",
              dataset: str = "fashion-mnist", algorithm: str = "em") -> InFlight:
    """Write the heartbeat file of a cell in flight for ``elapsed`` seconds, which reported
    iterations 0 to ``iteration`` over the last ``iterating`` seconds (of max_iter 100)."""
    now = time.time()
    cell = InFlight(experiment=experiment, dataset=dataset, algorithm=algorithm,
                    repetition=0, started=now - elapsed, iteration=iteration, max_iter=100,
                    first_iteration=None if iteration is None else 0,
                    iterating_since=None if iteration is None else now - iterating,
                    updated=now)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.json").write_text(json.dumps(asdict(cell)))
    return cell


def test_the_bar_at_80_columns_keeps_the_counts_and_shows_the_cell_in_flight(tmp_path):
    fake_cell(inflight_folder(tmp_path), experiment=LONG_EXPERIMENT, dataset=LONG_DATASET,
              algorithm=LONG_ALGORITHM)
    plan = [(LONG_EXPERIMENT, LONG_DATASET, LONG_ALGORITHM)] * 1008
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    with RunProgress(plan, console, jobs=2, mode="bar", title="a-suite-with-a-very-long-name-"
                     "for-the-paper-reproduction", run_folder=tmp_path) as shown:
        shown.progress(1002, 1008)
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) for line in
             out.getvalue().replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line.strip()]
    final = lines[-2:]  # the last frame: the bar and the cell's line
    assert "1002/1008" in final[0] and "ETA" in final[0], final
    assert final[1].startswith("  fashion-mnist-with-a-long-"), final
    assert re.search(r"…: iteration 37/100, 2:1[45] elapsed, ~3:4[01] left$", final[1]), final
    assert all(len(line) <= 80 for line in lines), lines


def test_a_pipe_gets_lines_with_the_iteration_and_elapsed_time_of_the_cell_in_flight(
        tmp_path):
    fake_cell(inflight_folder(tmp_path))
    fake_cell(inflight_folder(tmp_path), key="other", elapsed=5.0, iteration=None)
    out = io.StringIO()
    console = Console(file=out, width=80)  # not a terminal: plain lines
    with RunProgress([("fashion", "fashion-mnist", "em")] * 10, console, jobs=2,
                     interval=0.05, title="paper", run_folder=tmp_path) as shown:
        shown.progress(3, 10)
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "paper: started" and lines[-1] == "paper: finished"
    periodic = [line for line in lines if line.startswith("paper: 3/10 cells")]
    assert periodic, lines
    assert re.search(r"now fashion-mnist · em seed 0: iteration 37/100, 2:1[45] elapsed, "
                     r"~\d:\d\d left \(\+1 more in flight\)$", periodic[-1]), periodic[-1]


def test_the_eta_of_a_long_cell_comes_from_its_iteration_rate():
    now = time.time()
    running = InFlight("f", "fashion", "em", 0, started=now - 134, iteration=37, max_iter=100,
                       first_iteration=0, iterating_since=now - 130, updated=now)
    left = 63 / (37 / 130)  # 221 s at 37 iterations in 130 s
    assert running.seconds_left(now) == pytest.approx(left)
    costs = CellCosts([("e", "d", "a"), ("f", "fashion", "em"), ("f", "fashion", "em")], jobs=2)
    costs.finished({"experiment": "e", "dataset": "d", "algorithm": "a", "time": 2.0})
    # without the heartbeat: nothing to go on (another experiment's 2 s cells are no bound)
    assert costs.eta_text() == "?"
    # with it: the running cell's rate, and its projected cost for the queued one
    seconds = costs.eta([running], now)
    assert seconds == pytest.approx((left + (134 + left)) / 2)
    assert not costs.eta_text([running], now).startswith(">=")
    # the last cell, alone in flight: what it has left, not divided among the workers
    costs.finished({"experiment": "f", "dataset": "fashion", "algorithm": "em", "time": 300.0})
    assert costs.eta([running], now) == pytest.approx(left)
    assert describe_cell(running, now) == "fashion · em seed 0: iteration 37/100, 2:14 " \
                                          "elapsed, ~3:41 left"


def test_a_cell_in_flight_with_no_estimate_gives_no_eta_rather_than_a_stale_one():
    now = time.time()
    costs = CellCosts([("e", "d", "a"), ("f", "fashion", "em")])
    costs.finished({"experiment": "e", "dataset": "d", "algorithm": "a", "time": 2.0})
    one_report = InFlight("f", "fashion", "em", 0, started=now - 780, iteration=0,
                          max_iter=100, first_iteration=0, iterating_since=now - 770,
                          updated=now - 770)
    assert costs.eta_text([one_report], now) == "?"  # not ">= 0:00:02" for 13 minutes
    # a configuration whose finished cells cost 10 s: 4 s left after 6 s
    costs = CellCosts([("f", "fashion", "em")] * 2)
    costs.finished({"experiment": "f", "dataset": "fashion", "algorithm": "em", "time": 10.0})
    young = InFlight("f", "fashion", "em", 1, started=now - 6)
    assert costs.eta([young], now) == pytest.approx(4.0)
    old = InFlight("f", "fashion", "em", 1, started=now - 60)  # past the mean: unknown
    assert costs.eta_text([old], now) == "?"


class FakeClock:
    """A wall clock that moves only when told to (``clock.at(seconds after the start)``)."""

    def __init__(self) -> None:
        self.start = self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def at(self, seconds: float) -> float:
        self.now = self.start + seconds
        return self.now


def beat(folder: Path, clock: FakeClock, key: str, experiment: str, dataset: str,
         algorithm: str, repetition: int, started: float, **progress: float) -> None:
    """Write a heartbeat file like a worker does; times in seconds after the clock's start
    (``progress``: iteration, first_iteration, iterating_since, updated; max_iter is 15)."""
    times = {"iterating_since", "updated"}
    fields = {k: clock.start + v if k in times else v for k, v in progress.items()}
    cell = InFlight(experiment, dataset, algorithm, repetition, clock.start + started,
                    max_iter=15, **fields)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.json").write_text(json.dumps(asdict(cell)))


def test_a_pipes_lines_name_the_cell_in_flight_one_way_and_never_say_the_same_twice(
        tmp_path):
    clock, folder = FakeClock(), inflight_folder(tmp_path)
    gd, em = ("makkuva", "synthetic-moe[k=2]", "gd"), ("fruytier", "fashion-mnist", "em")
    out = io.StringIO()

    def finish(key, done, cost):
        (folder / f"{key}.json").unlink()
        experiment, dataset, algorithm = gd if key.startswith("gd") else em
        shown.on_cell({"experiment": experiment, "dataset": dataset, "algorithm": algorithm,
                       "time": cost})
        shown.progress(done, 4)

    with RunProgress([gd, gd, em, em], Console(file=out, width=80), interval=30,
                     title="paper", run_folder=tmp_path, clock=clock) as shown:
        beat(folder, clock, "gd0", *gd, 0, started=0)
        clock.at(30)
        shown.tick()  # a cell that has not reported an iteration: its name and elapsed time
        beat(folder, clock, "gd0", *gd, 0, started=0, iteration=3, first_iteration=0,
             iterating_since=10, updated=30)  # 0.15 iterations a second: 80 s left
        clock.at(31)
        shown.tick()  # not due
        clock.at(60)
        shown.tick()
        clock.at(61)
        finish("gd0", 1, 61.0)  # 25 %: a milestone ...
        clock.at(62)
        shown.tick()  # ... and no periodic line right after it
        clock.at(91)
        shown.tick()  # due, but nothing new to say (only the run's elapsed time moved)
        beat(folder, clock, "gd1", *gd, 1, started=95)
        clock.at(121)
        shown.tick()
        clock.at(122)
        finish("gd1", 2, 61.0)
        clock.at(152)
        shown.tick()  # nothing new
        beat(folder, clock, "em0", *em, 0, started=160)
        clock.at(161)
        finish("em0", 3, 1.0)
        beat(folder, clock, "em1", *em, 1, started=161)
        finish("em1", 4, 1.0)
        for seconds in (191, 221):
            clock.at(seconds)
            shown.tick()  # all cells done: nothing new
    assert out.getvalue().splitlines() == [
        "paper: started",
        "paper: 0/4 cells (0 %), elapsed 0:00:30, ETA ?, now makkuva · synthetic-moe[k=2] · "
        "gd seed 0, 0:30 elapsed",
        "paper: 0/4 cells (0 %), elapsed 0:01:00, ETA >= 0:02:40, now makkuva · "
        "synthetic-moe[k=2] · gd seed 0: iteration 3/15, 1:00 elapsed, ~0:50 left",
        "paper: 1/4 cells (25 %), elapsed 0:01:01, ETA >= 0:01:01, next makkuva · "
        "synthetic-moe[k=2] · gd",
        "paper: 1/4 cells (25 %), elapsed 0:02:01, ETA >= 0:00:35, now makkuva · "
        "synthetic-moe[k=2] · gd seed 1, 0:26 elapsed",
        # the Fashion-MNIST cells left, nothing to estimate them from: no '>= 0:00:00'
        "paper: 2/4 cells (50 %), elapsed 0:02:02, ETA ?, next fruytier · fashion-mnist · em",
        "paper: 3/4 cells (75 %), elapsed 0:02:41, ETA 0:00:01, next fruytier · "
        "fashion-mnist · em",
        "paper: 4/4 cells (100 %), elapsed 0:02:41, all cells done",
        "paper: finished",
    ]


def test_cells_with_nothing_to_estimate_them_from_make_the_eta_unknown_or_a_real_bound():
    quick, slow, fashion = ("m", "synthetic", "gd"), ("m", "synthetic", "em"), \
        ("f", "fashion-mnist", "em")
    costs = CellCosts([quick] * 3 + [fashion] * 12)
    for _ in range(2):  # finished in 0.2 s each
        costs.finished({"experiment": "m", "dataset": "synthetic", "algorithm": "gd",
                        "time": 0.15, "time_metrics": 0.05})
    # 0.2 s are left that are known, twelve Fashion-MNIST cells unknown: no bound worth a
    # second, where a guess from the synthetic cells said '>= 0:00:02' (and 0:00:00 later)
    assert costs.estimate() == (pytest.approx(0.2), True)
    assert costs.eta_text() == "?"
    costs = CellCosts([quick] * 2 + [slow] * 4 + [fashion])
    costs.finished({"experiment": "m", "dataset": "synthetic", "algorithm": "gd", "time": 0.2})
    costs.finished({"experiment": "m", "dataset": "synthetic", "algorithm": "em", "time": 5.0})
    # three 5 s cells and one 0.2 s cell are left for sure: at least 15.2 s
    assert costs.eta_text() == ">= 0:00:15"
    assert CellCosts([fashion]).eta_text() == "?"


def test_a_cell_is_named_the_same_way_with_or_without_an_iteration():
    now = 1_700_000_000.0
    cell = InFlight("makkuva", "synthetic-moe[k=2]", "gd", 0, started=now - 0.3)
    assert describe_cell(cell, now, experiment=True) == \
        "makkuva · synthetic-moe[k=2] · gd seed 0, 0:00 elapsed"
    iterating = InFlight("makkuva", "synthetic-moe[k=2]", "gd", 0, started=now - 1.2,
                         iteration=3, max_iter=15)
    assert describe_cell(iterating, now, experiment=True) == \
        "makkuva · synthetic-moe[k=2] · gd seed 0: iteration 3/15, 0:01 elapsed"
    # shortened to a width, the name is cut and the elapsed time kept
    assert describe_cell(cell, now, experiment=True, width=30) == \
        "makkuva · synth…, 0:00 elapsed"


def _spec(algorithm: str = "a") -> SimpleNamespace:
    budget = SimpleNamespace(max_iter=100)
    experiment = SimpleNamespace(name="e", budget_for=lambda variant: budget)
    return SimpleNamespace(experiment=experiment, dataset=SimpleNamespace(id="d"),
                           algorithm=SimpleNamespace(id=algorithm), repetition=2, key="k")


def test_a_heartbeat_is_written_at_most_twice_a_second_and_removed_when_the_cell_ends(
        tmp_path, monkeypatch):
    folder = inflight_folder(tmp_path)
    folder.mkdir()
    path = hb.heartbeat_file(folder, _spec())
    writes = []
    real_replace = os.replace
    monkeypatch.setattr(hb.os, "replace", lambda a, b: (writes.append(b), real_replace(a, b)))
    beats = Heartbeat(path, _spec(), wall=60.0)  # written at the start
    (cell,) = read_heartbeats(folder)
    assert cell.iteration is None and cell.plan_key == ("e", "d", "a") and cell.wall == 60.0
    for t in range(1000):  # a fast algorithm's reports: the first one and then none
        beats.beat(t)
    assert len(writes) == 2
    assert read_heartbeats(folder)[0].iteration == 0
    monkeypatch.setattr(hb, "BEAT_INTERVAL", 0.0)
    beats.beat(1000)
    assert read_heartbeats(folder)[0].iteration == 1000
    beats.close()
    assert list(folder.iterdir()) == []  # no temporary file either
    Heartbeat(str(tmp_path / "absent" / "k.json"), _spec()).beat(3)  # a remote worker
    assert not (tmp_path / "absent").exists()
    # two entries that differ by their label only (one key) write two files
    assert hb.heartbeat_file(folder, _spec("a")) != hb.heartbeat_file(folder, _spec("b"))


CRAWL = '''
    import time

    from moebench import Algorithm, Params, hookimpl
    from moebench.algorithm import Iterate
    from pydantic import Field


    class Crawl(Algorithm):
        """Reports an iteration every ``pause`` seconds (a long cell, in small)."""
        name = "crawl"

        class Params(Params):
            pause: float = Field(0.1, description="seconds between reports")
            hang: bool = Field(False, description="hang after the first report")

        def fit(self, problem, init, callback):
            t = 0
            while callback(Iterate(t, init, objective=1.0 / (t + 1))):
                time.sleep(600 if self.params.hang else self.params.pause)
                t += 1
            return init


    @hookimpl
    def register_algorithms(register):
        register(Crawl)
'''

SUITE = """
name: progress-test
seed: 3
repetitions: 1
budget: {max_iter: 15, timeout: 60, wall_timeout: 60}
metrics: [train_nll]
datasets:
  - name: synthetic-moe
    params: {n: 200, n_test: 50, d: 3, k: 2, sigma: 0.3}
algorithms:
"""


@pytest.fixture
def crawl_site(tmp_path, monkeypatch, fresh_plugins):
    site = fake_distribution(tmp_path / "site", "mb-crawl", {"mb_crawl": CRAWL},
                             {"crawl": "mb_crawl"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    return site


def test_a_killed_cells_heartbeat_is_removed_before_it_is_reported(crawl_site, tmp_path):
    suite = parse_suite(textwrap.dedent(SUITE) + "  - {name: crawl, label: quick, params: "
                        "{pause: 0.01}}\n  - {name: crawl, label: hang, params: {hang: true}, "
                        "budget: {max_iter: 15, wall_timeout: 1.5}}\n")
    folder = inflight_folder(tmp_path / "out" / "progress-test")
    seen, running, watching = [], set(), threading.Event()

    def on_cell(row):
        seen.append((row["algorithm"], row["status"],
                     [c.algorithm for c in read_heartbeats(folder)]))

    def watch():  # the names of the heartbeat files while the run goes on
        while not watching.wait(0.05):
            running.update(c.algorithm for c in read_heartbeats(folder))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        directory = run_suite(suite, tmp_path / "out", on_cell=on_cell)
    finally:
        watching.set()
        watcher.join()
    assert [(alg, status) for alg, status, _ in seen] == [("quick", "max_iter"),
                                                          ("hang", "timeout")]
    assert "hang" in running  # its worker wrote a heartbeat, then was killed ...
    # ... and each cell's heartbeat was gone when the cell was reported
    assert all(alg not in running_then for alg, _, running_then in seen), seen
    assert not folder.exists()
    (quick, hang), _ = read_cell_lines(directory / "cells.jsonl")
    assert len(quick) == 17 and {r["record"] for r in quick} == {"iteration", "final"}


def test_a_run_in_a_pipe_shows_the_iteration_of_its_cells_and_its_summary_unwrapped(
        crawl_site, tmp_path):
    suite_file = tmp_path / "progress.yaml"
    suite_file.write_text(textwrap.dedent(SUITE) + "  - {name: crawl, params: {pause: 0.15}}\n")
    out = tmp_path / ("a-results-folder-with-a-name-long-enough-that-its-path-passes-eighty-"
                      "columns")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(crawl_site), str(ROOT)]),
           "MOEBENCH_PROGRESS_INTERVAL": "0.5", "COLUMNS": "80"}
    with open(tmp_path / "stdout.txt", "w") as stdout, \
            open(tmp_path / "stderr.txt", "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "moebench.cli", "run", str(suite_file),
                               "--out", str(out), "--no-report"],
                              stdout=stdout, stderr=stderr, env=env, timeout=120)
    log, summary = (tmp_path / "stderr.txt").read_text(), (tmp_path / "stdout.txt").read_text()
    assert done.returncode == 0, log + summary
    assert re.search(r"^progress-test: 0/1 cells \(0 %\), elapsed \d:\d\d:\d\d, ETA .*, now "
                     r"synthetic-moe · crawl seed 0: iteration \d+/15, \d:\d\d elapsed",
                     log, re.MULTILINE), log
    # once it has iterated a while, an ETA from its iteration rate
    assert re.search(r", ETA 0:00:0\d, now synthetic-moe · crawl seed 0: iteration \d+/15, "
                     r"\d:\d\d elapsed, ~0:0\d left$", log, re.MULTILINE), log
    directory = out / "progress-test"
    assert f"results in {directory}  (max_iter: 1)" in summary.splitlines(), summary
    assert any(line.startswith("time: wall ") and len(line) > 80
               for line in summary.splitlines()), summary
    assert not inflight_folder(directory).exists()
