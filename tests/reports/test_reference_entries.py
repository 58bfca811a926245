"""An algorithm entry marked ``reference`` (an oracle such as mle-from-truth) is shown on the
leaderboards for comparison but never ranked, nor named the best, even when its score is."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from moebench.errors import SuiteError
from moebench.reports.leaderboard import REFERENCE_TEXT, format_rows, leaderboard, to_markdown
from moebench.reports.results import RunResults
from moebench.reports.summary import summarize
from moebench.suite import parse_suite, resolve


def finals(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"record": "final", "experiment": "e", "dataset": "d", "algorithm": alg,
             "repetition": rep, "status": "done", "train_nll": value, "time": 0.1,
             "iteration": 10}
            for alg, values in scores.items() for rep, value in enumerate(values)]
    return pd.DataFrame(rows)


def test_a_reference_is_listed_last_without_a_rank_even_when_best():
    frame = finals({"oracle": [0.5, 0.5], "em": [0.6, 0.62], "gd": [0.7, 0.7]})
    board = leaderboard(frame, "train_nll", {"train_nll": "min"}, {"e": {"oracle"}})
    assert board["algorithm"].tolist() == ["em", "gd", "oracle"]
    assert board["rank"].tolist()[:2] == [1, 2] and math.isnan(board["rank"].iloc[2])
    assert [row[0] for row in format_rows(board)] == ["1", "2", REFERENCE_TEXT]
    text = to_markdown(board, {"train_nll": "min"})
    assert "| ref. | oracle | 0.5 ± 0 |" in text and "not a competitor" in text
    # without the mark, the oracle would win
    plain = leaderboard(frame, "train_nll", {"train_nll": "min"})
    assert plain.iloc[0]["algorithm"] == "oracle" and not plain["reference"].any()


def test_the_summary_never_names_a_reference_the_best(tmp_path):
    manifest = {"rank_by": {"e": "train_nll"}, "metric_directions": {"train_nll": "min"},
                "experiments": [{"name": "e", "algorithms": {
                    "oracle": {"name": "mle-from-truth", "params": {}, "reference": True},
                    "em": {"name": "joint-em", "params": {}}}}]}
    run = RunResults(Path(tmp_path), finals({"oracle": [0.5], "em": [0.6]}), manifest)
    assert run.references == {"e": frozenset({"oracle"})}
    (summary,) = summarize(run)
    assert summary.winner == "em"


def test_the_suite_flag_is_strict_and_recorded_per_variant():
    text = textwrap.dedent("""
        name: s
        experiments:
          - name: e
            metrics: [train_nll]
            datasets: [{name: synthetic-moe, params: {n: 50, n_test: 10, d: 3, k: 2}}]
            algorithms:
              - {name: joint-em}
              - {name: mle-from-truth, reference: true}
    """)
    (exp,) = resolve(parse_suite(text))
    assert [(v.id, v.reference) for v in exp.algorithms] == [("joint-em", False),
                                                             ("mle-from-truth", True)]
    with pytest.raises(SuiteError, match="reference"):
        parse_suite(text.replace("reference: true", "reference: 'yes'"))
