"""Suboptimality (benchopt's view) and time to tolerance, on rows whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moebench.reports.figures import Styles, suboptimality_figure
from moebench.reports.suboptimality import (
    COLUMN,
    floor,
    suboptimality_curves,
    suboptimality_rows,
    time_to_tolerance,
)


def _rows(traces: dict[tuple[str, int], list[float]], status: dict[str, str] | None = None,
          metric: str = "train_nll") -> pd.DataFrame:
    """Iteration rows (one per value, 0.5 s per iteration) and a final row per cell."""
    out = []
    for (algorithm, seed), values in traces.items():
        st = (status or {}).get(algorithm, "max_iter")
        for t, v in enumerate(values):
            out.append({"experiment": "e", "dataset": "d", "algorithm": algorithm,
                        "repetition": seed, "record": "iteration", "iteration": t,
                        "time": 0.5 * t, "status": st, metric: v})
        out.append({"experiment": "e", "dataset": "d", "algorithm": algorithm,
                    "repetition": seed, "record": "final", "iteration": len(values) - 1,
                    "time": 0.5 * (len(values) - 1), "status": st, metric: values[-1]})
    return pd.DataFrame(out)


TRACES = {
    ("em", 0): [3.0, 1.5, 1.0, 1.0],       # reaches the seed's best (1.0) at iteration 2
    ("em", 1): [4.0, 2.5, 2.01, 2.0001],   # within 1e-4 of 2.0 only at iteration 3
    ("gd", 0): [3.0, 2.0, 1.2, 1.005],     # within 1e-2 of 1.0 at iteration 3 only
    ("gd", 1): [4.0, 3.0, 2.5, 2.0],       # the seed's best: 2.0 at iteration 3
}


def test_suboptimality_is_the_gap_to_the_best_value_of_the_same_seed():
    rows = suboptimality_rows(_rows(TRACES), "e", "d", "train_nll", "min")
    it = rows[rows["record"] == "iteration"].set_index(["algorithm", "repetition", "iteration"])
    assert it.loc[("em", 0, 3), COLUMN] == 0.0 and it.loc[("gd", 1, 3), COLUMN] == 0.0
    assert it.loc[("gd", 0, 1), COLUMN] == pytest.approx(1.0)  # 2.0 - best 1.0 of seed 0
    assert it.loc[("em", 1, 1), COLUMN] == pytest.approx(0.5)  # 2.5 - best 2.0 of seed 1
    assert (it[COLUMN] >= 0).all()
    # the final rows carry no suboptimality (curves count their statuses only)
    assert rows.loc[rows["record"] == "final", COLUMN].isna().all()


def test_a_metric_to_maximise_measures_the_gap_below_the_best():
    acc = {("a", 0): [0.5, 0.9], ("b", 0): [0.5, 0.7]}
    rows = suboptimality_rows(_rows(acc, metric="acc"), "e", "d", "acc", "max")
    last = rows[(rows["record"] == "iteration") & (rows["iteration"] == 1)]
    assert dict(zip(last["algorithm"], last[COLUMN], strict=True)) == {
        "a": 0.0, "b": pytest.approx(0.2)}


def test_time_to_tolerance_counts_the_seeds_that_got_there():
    rows = suboptimality_rows(_rows(TRACES), "e", "d", "train_nll", "min")
    reach = {(r.algorithm, r.tolerance): r for r in time_to_tolerance(rows, (1e-2, 1e-6))}
    em = reach[("em", 1e-2)]
    # seed 0 within 1e-2 * max(1, 1.0) at iteration 2; seed 1 within 1e-2 * 2.0 at iteration 2
    assert (em.reached, em.seeds, em.median_iteration, em.median_time) == (2, 2, 2.0, 1.0)
    em_tight = reach[("em", 1e-6)]  # seed 1 stays 1e-4 above its best
    assert (em_tight.reached, em_tight.median_iteration) == (1, 2.0)
    # gd: seed 0 ends 0.005 above its best (iteration 3); seed 1's last step sets f* itself,
    # a gap of 0 by construction that no later iteration confirms: not counted
    gd = reach[("gd", 1e-2)]
    assert (gd.reached, gd.median_iteration) == (1, 3.0)
    assert reach[("gd", 1e-6)].reached == 0
    # em, seed 0: it sets f* at iteration 2 and stays there at 3: counted at iteration 2
    assert reach[("em", 1e-6)].median_iteration == 2.0


def test_diverged_and_failed_cells_neither_set_the_best_nor_reach_it():
    traces = {**TRACES, ("bad", 0): [3.0, 0.1], ("bad", 1): [4.0, -5.0]}
    rows = suboptimality_rows(_rows(traces, status={"bad": "diverged"}), "e", "d",
                              "train_nll", "min")
    assert set(rows["best"]) == {1.0, 2.0}
    assert "bad" not in {r.algorithm for r in time_to_tolerance(rows)}
    curves = suboptimality_curves(rows, "e", "d")
    assert [c.diverged for c in curves if c.algorithm == "bad"] == [2]  # named, not drawn


def test_the_figure_has_log_log_axes_and_draws_zero_below_the_smallest_gap():
    rows = suboptimality_rows(_rows(TRACES), "e", "d", "train_nll", "min")
    low = floor(rows)
    smallest = rows.loc[rows[COLUMN] > 0, COLUMN].min()  # 1e-4 (em, seed 1)
    assert low < smallest and low >= smallest / 100
    fig = suboptimality_figure(suboptimality_curves(rows, "e", "d"), "train_nll", "d", low,
                               Styles())
    layout = fig["layout"]
    assert layout["xaxis"]["type"] == "log" and layout["yaxis"]["type"] == "log"
    assert layout["yaxis"]["tickmode"] == "array" and layout["xaxis"]["tickmode"] == "array"
    lines = [t for t in fig["data"] if t.get("showlegend", True)]
    assert [t["name"] for t in lines] == ["em", "gd"]
    assert min(v for t in fig["data"] for v in t["y"] if v is not None) >= low
    one_seed = suboptimality_rows(_rows({k: v for k, v in TRACES.items() if k[1] == 0}), "e",
                                  "d", "train_nll", "min")
    lone = suboptimality_figure(suboptimality_curves(one_seed, "e", "d"), "train_nll", "d",
                                floor(one_seed), Styles())
    em_line = next(t for t in lone["data"] if t["name"] == "em")
    assert em_line["y"][-1] == floor(one_seed)  # its zero gap drawn at the floor, not lost
    assert all(x > 0 for t in lines for x in t["x"])  # the initial point is left out
    # the toggle swaps the x values and the log ticks to time
    time_button = layout["updatemenus"][0]["buttons"][1]["args"]
    assert time_button[1]["xaxis.title.text"].startswith("algorithm time")
    assert time_button[1]["xaxis.tickvals"] and time_button[0]["x"][1] == [0.5, 1.0, 1.5]
    assert np.all(np.diff(time_button[0]["x"][1]) > 0)


def test_no_objective_rows_no_view():
    rows = suboptimality_rows(_rows(TRACES), "e", "d", "param_error", "min")
    assert rows.empty and suboptimality_curves(rows, "e", "d") == []
    assert time_to_tolerance(rows) == []
