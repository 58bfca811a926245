"""Phase diagrams: which seeds reached the optimum, from hand-made rows whose answers are known;
the heatmap, the PNG and table of REPRODUCTION.md, the finding in both outcomes; the schema of
a phase figure."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from moebench.errors import SuiteError
from moebench.reports.html import build_context, render
from moebench.reports.phase import phase_comparison, phase_finding, phase_table, same_slice
from moebench.reports.phase_report import phase_heatmap, phase_markdown, phase_tables
from moebench.reports.results import RunResults
from moebench.suite import parse_suite, resolve, select

FIGURE = {"kind": "phase", "x": "k", "y": "init.scale", "algorithm": "em",
          "reference": "oracle", "experiments": ["a", "b"], "metric": "train_nll",
          "tolerance": 1e-4, "title": None}
EXPERIMENTS = [{"name": "a", "init": {"scheme": "random", "scale": 1.0}, "figures": [FIGURE]},
               {"name": "b", "init": {"scheme": "random", "scale": 3.0}, "figures": []}]


def _final(exp: str, k: int, alg: str, rep: int, nll: float, status: str = "done",
           param: float = 0.1) -> dict:
    return {"experiment": exp, "dataset": f"synthetic-moe[k={k}]", "algorithm": alg,
            "repetition": rep, "record": "final", "iteration": 10, "time": 0.1,
            "status": status, "message": None,
            "dataset_params": json.dumps({"k": k, "n": 100}),
            "train_nll": nll, "param_error": param}


def _rows() -> pd.DataFrame:
    rows = []
    for exp in ("a", "b"):
        for rep in range(4):
            rows += [_final(exp, 2, "oracle", rep, -2.0), _final(exp, 2, "em", rep, -2.0)]
    # k = 4 in a: seed 0 lower than the oracle, seed 1 exactly on the tolerance edge
    # (|f_ref| = 2: 2e-4 above), seed 2 just beyond it, seed 3 diverged
    rows += [_final("a", 4, "oracle", r, -2.0, param=0.1) for r in range(4)]
    rows += [_final("a", 4, "em", 0, -2.5, param=0.15), _final("a", 4, "em", 1, -2.0 + 2e-4),
             _final("a", 4, "em", 2, -2.0 + 2.1e-4, param=0.3),
             _final("a", 4, "em", 3, float("nan"), status="diverged", param=float("nan"))]
    # k = 4 in b: seed 0 has no oracle row, seed 1 an oracle that errored
    rows += [_final("b", 4, "em", 0, -2.0), _final("b", 4, "em", 1, -2.0),
             _final("b", 4, "oracle", 1, float("nan"), status="error"),
             _final("b", 4, "em", 2, 0.5), _final("b", 4, "oracle", 2, -2.0)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table():
    return phase_table(_rows(), FIGURE, "a", EXPERIMENTS)


def test_a_seed_reaches_the_optimum_within_the_relative_tolerance_or_below(table):
    assert table.xs == [2, 4] and table.ys == [1.0, 3.0]
    cell = table.cell(4, 1.0)
    # lower than the oracle and on the edge count; 2.1e-4 / 2 > 1e-4 and the diverged seed not
    assert (cell.reached, cell.judged, cell.unjudged) == (2, 4, 0)
    assert cell.fraction == 0.5
    # param view: 0.15 <= 2 x 0.1 (reached), 0.3 > 0.2, the diverged seed fails
    assert (cell.param_reached, cell.param_judged) == (2, 4)
    assert table.cell(2, 1.0).reached == table.cell(2, 3.0).reached == 4


def test_seeds_without_a_successful_oracle_are_not_judged(table):
    cell = table.cell(4, 3.0)
    assert (cell.reached, cell.judged, cell.unjudged) == (0, 1, 2)


def test_the_finding_names_the_failing_settings_or_says_none_was_found(table):
    text = phase_finding(table)
    assert "fewer than 90% of the seeds at k=4, init.scale=1 (2/4); k=4, init.scale=3 (0/1)" \
        in text
    assert "at most 1.0e-04 on the seeds that reached it, 1.1e-04 to 1.2e+00 on the others" in text
    fine = phase_table(_rows().query("dataset == 'synthetic-moe[k=2]'"), FIGURE, "a",
                       EXPERIMENTS)
    text = phase_finding(fine)
    assert "was not found in the grid tried" in text and "k in {2} x init.scale in {1, 3}" in text
    none = phase_table(_rows().query("algorithm == 'em'"), FIGURE, "a", EXPERIMENTS)
    assert phase_finding(none).startswith("No seed of em could be judged")


def test_the_heatmap_shows_each_setting_with_its_counts(table):
    fig = phase_heatmap(table, "title")
    heat = fig["data"][0]
    assert heat["x"] == ["2", "4"] and heat["y"] == ["1", "3"]
    assert heat["z"] == [[1.0, 0.5], [1.0, 0.0]] and (heat["zmin"], heat["zmax"]) == (0, 1)
    texts = {(a["x"], a["y"]): a["text"] for a in fig["layout"]["annotations"]}
    assert texts[("4", "3")] == "0/1 (+2 unjudged)" and texts[("2", "1")] == "4/4"


def _run(tmp_path) -> RunResults:
    manifest = {"suite": "s", "experiments": [
        {**e, "datasets": {}, "algorithms": {}, "metrics": ["train_nll", "param_error"],
         "rank_by": "train_nll", "repetitions": 4, "description": "",
         "budget": {"max_iter": 10, "timeout": 1}} for e in EXPERIMENTS],
        "metric_directions": {"train_nll": "min", "param_error": "min"}}
    return RunResults(tmp_path, _rows(), manifest)


def test_reproduction_gets_the_finding_a_png_and_the_table(tmp_path):
    (tmp_path / "figures").mkdir()
    lines = phase_markdown(_run(tmp_path).manifest["experiments"][0], _run(tmp_path), tmp_path,
                           "figures")
    text = "\n".join(lines)
    assert "fewer than 90% of the seeds at k=4, init.scale=1 (2/4)" in text
    assert "![" in text and (tmp_path / "figures" / "a__phase0.png").stat().st_size > 1000
    assert "| init.scale \\ k | 2 | 4 |" in text
    assert "| 1 | 4/4; param 4/4 | 2/4; param 2/4 |" in text
    assert phase_markdown(_run(tmp_path).manifest["experiments"][1], _run(tmp_path), tmp_path,
                          "figures") == []  # b declares no phase figure


def test_the_report_draws_the_phase_diagram_in_the_declaring_section(tmp_path):
    context = build_context(_run(tmp_path))
    first, second = context["sections"]
    assert [p["title"] for p in first["phases"]] == [
        "em reaching oracle's optimum, by k and init.scale"] and second["phases"] == []
    heat = context["figures"][int(first["phases"][0]["plot"].split("-")[1])]
    assert heat["data"][0]["type"] == "heatmap"
    assert "Phase diagram: em reaching oracle" in render(context)


SUITE = """name: s
experiments:
  - name: e
    datasets: [{name: synthetic-moe, params: {n: 100}, grid: {k: [2, 3]}}]
    algorithms: [{name: joint-em}, {name: mle-from-truth}]
    figures:
      - {metric: train_nll}
      - {kind: phase, x: k, %s, algorithm: joint-em, reference: mle-from-truth}
"""


def test_a_phase_figure_is_strict_and_a_typo_names_its_field():
    figure = parse_suite(SUITE % "y: init.scale").experiments[0].figures[1]
    assert (figure.kind, figure.y, figure.tolerance) == ("phase", "init.scale", 1e-4)
    with pytest.raises(SuiteError) as info:
        parse_suite(SUITE % "yy: init.scale")
    assert "experiments[0].figures[1].yy" in str(info.value)
    assert "unknown key 'yy'; did you mean 'y'?" in str(info.value)
    with pytest.raises(SuiteError, match=r"figures\[1\].*'convergence' \(the default\) or "
                                         "'phase'"):
        parse_suite((SUITE % "y: n").replace("kind: phase", "kind: phse"))


def test_a_selection_drops_the_phase_figures_and_experiments_it_removes():
    text = (SUITE % "y: init.scale, experiments: [e, f]") + """
  - name: f
    datasets: [{name: synthetic-moe, params: {n: 100}, grid: {k: [2, 3]}}]
    algorithms: [{name: joint-em}, {name: mle-from-truth}]
"""
    suite = parse_suite(text)
    assert resolve(suite)[0].figures[1].experiments == ["e", "f"]
    assert select(suite, ["e"], [], []).experiments[0].figures[1].experiments == ["e"]
    assert [f.kind for f in select(suite, [], ["joint-em"], []).experiments[0].figures] == [
        "convergence"]  # the reference is gone: so is the diagram
    with pytest.raises(SuiteError, match=r"figures\[1\]\.experiments\[1\].*unknown experiment 'g'"):
        resolve(parse_suite(text.replace("[e, f]", "[e, g]")))


# Two diagrams of one slice: em (the baseline, first) and tm judged on the same seeds.
EM, TM = ({**FIGURE, "algorithm": alg, "experiments": []} for alg in ("em", "tm"))


def _pair_rows(reached: dict[int, tuple[int, int]], seeds: int = 4) -> pd.DataFrame:
    """Per k, ``(em, tm)`` seeds of ``seeds`` that reached the oracle's -2 (the others end at
    -1, a local optimum)."""
    rows = []
    for k, counts in reached.items():
        for rep in range(seeds):
            rows.append(_final("a", k, "oracle", rep, -2.0))
            rows += [_final("a", k, alg, rep, -2.0 if rep < n else -1.0)
                     for alg, n in zip(("em", "tm"), counts, strict=True)]
    return pd.DataFrame(rows)


def _compared(reached: dict[int, tuple[int, int]]) -> str:
    frame = _pair_rows(reached)
    em, tm = (phase_table(frame, f, "a", EXPERIMENTS) for f in (EM, TM))
    assert same_slice(em, tm)
    return phase_comparison(tm, em)


def test_the_comparison_says_where_the_second_algorithm_reached_what_the_first_missed():
    text = _compared({2: (4, 4), 4: (1, 4), 6: (0, 2)})
    assert ("Where em reached the optimum in fewer than 90% of the seeds (k=4, init.scale=1: "
            "em 1/4, tm 4/4; k=6, init.scale=1: em 0/4, tm 2/4), tm reached it in 6/8 seeds"
            in text)
    assert "the claim that tm reaches the optimum where em does not holds at k=4, init.scale=1" \
        in text and "not at the other 1 setting(s)" in text
    assert "more often than em, though in fewer than 90% of the seeds, at k=6, init.scale=1" \
        in text
    assert _compared({4: (0, 4), 6: (2, 4)}).endswith(
        "tm reached it in 8/8 seeds, in at least 90% of the seeds of each: the claim that tm "
        "reaches the optimum where em does not holds there.")


def test_the_comparison_says_when_the_claim_was_not_found_or_could_not_be_tested():
    text = _compared({2: (4, 0), 4: (1, 1), 6: (0, 0)})
    assert "tm reached it in 1/8 seeds" in text and "neither did tm" in text
    assert "was not found to hold in the grid tried" in text and "more often" not in text
    assert "could not be tested in the grid tried" in _compared({2: (4, 0), 4: (4, 4)})


def test_a_later_diagram_of_the_same_slice_revisits_the_first_ones_failures(tmp_path):
    other = {**TM, "y": "n"}  # another slice: not compared
    exps = [{**EXPERIMENTS[0], "figures": [EM, TM, other]}, EXPERIMENTS[1]]
    manifest = {"suite": "s", "experiments": [
        {**e, "datasets": {}, "algorithms": {}, "metrics": ["train_nll", "param_error"],
         "rank_by": "train_nll", "repetitions": 4, "description": "",
         "budget": {"max_iter": 10, "timeout": 1}} for e in exps],
        "metric_directions": {"train_nll": "min", "param_error": "min"}}
    run = RunResults(tmp_path, _pair_rows({2: (4, 4), 4: (1, 4)}), manifest)
    (em, _), (tm, _), (by_n, _) = phase_tables(manifest["experiments"][0], run)
    assert em.baseline is None and tm.baseline is em and by_n.baseline is None
    findings = [p["finding"] for p in build_context(run)["sections"][0]["phases"]]
    assert "Where em reached" not in findings[0] and "Where em reached" not in findings[2]
    assert "Where em reached the optimum in fewer than 90% of the seeds (k=4, init.scale=1: " \
        "em 1/4, tm 4/4), tm reached it in 4/4 seeds" in findings[1]


def test_the_finding_counts_the_misses_the_budget_stopped():
    frame = _pair_rows({4: (1, 4)})
    miss = (frame["algorithm"] == "em") & (frame["repetition"] == 2)
    frame.loc[miss, "status"] = "max_iter"  # stopped by the budget, 1 above the oracle
    text = phase_finding(phase_table(frame, EM, "a", EXPERIMENTS))
    assert ("1 of the 3 seeds that missed it were stopped by the budget (max_iter or timeout) "
            "before converging") in text
    assert "stopped by the budget" not in phase_finding(
        phase_table(_pair_rows({4: (1, 4)}), EM, "a", EXPERIMENTS))
