"""Reports rank from what the run recorded: a "higher is better" metric whose plugin is not
installed is still ranked, compared and worded the right way round."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from moebench import plugins
from moebench.cell.rows import rows_to_frame
from moebench.reports import (
    RunResults,
    UnrecordedDirection,
    build_context,
    compare_runs,
    leaderboard_of,
    summary_lines,
    write_leaderboards,
    write_reproduction,
)

REPORTS = Path(__file__).resolve().parents[2] / "moebench" / "reports"
#: A metric no plugin registers, better when higher.
METRIC = "hits_recorded_only"
SEEDS = range(8)


def _final(algorithm: str, repetition: int, value: float) -> dict:
    return {"suite": "dirs", "experiment": "e", "dataset": "d", "algorithm": algorithm,
            "repetition": repetition, "dataset_params": "{}", "algorithm_params": "{}",
            "record": "final", "iteration": 10, "time": 1.0, "status": "max_iter",
            "message": None, METRIC: value}


def _folder(path: Path, values: dict[str, float], directions: bool = True) -> Path:
    """A results folder of experiment ``e`` ranked by METRIC; ``values``: per algorithm, the
    metric of seed 0 (seed r adds r / 1000)."""
    rows = [_final(alg, r, v + r / 1000) for alg, v in values.items() for r in SEEDS]
    path.mkdir(parents=True)
    rows_to_frame(rows).to_parquet(path / "results.parquet", index=False)
    experiment = {
        "name": "e", "description": None, "repetitions": len(SEEDS),
        "budget": {"max_iter": 10, "timeout": 60.0}, "init": {"scheme": "random"},
        "metrics": [METRIC], "rank_by": METRIC, "datasets": ["d"], "figures": [],
        "reference": {"source": "A paper", "values": [
            {"dataset": "d", "algorithm": "good", "metric": METRIC, "mean": 0.5, "std": 0.01}],
            "claims": [{"text": "good beats bad", "better": "good", "than": "bad",
                        "metric": METRIC}]},
    }
    manifest = {"suite": "dirs", "rank_by": {"e": METRIC}, "metrics": {"e": [METRIC]},
                "experiments": [experiment]}
    if directions:
        manifest["metric_directions"] = {METRIC: "max"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def no_registry(monkeypatch):
    """Any question to the plugin registry fails the test."""

    def asked(*args, **kwargs):
        raise AssertionError(f"the reports asked the plugin registry {args}")

    for name in ("get", "components", "load_plugins", "plugin_infos"):
        monkeypatch.setattr(plugins, name, asked)


def test_a_recorded_max_metric_ranks_higher_first_without_its_plugin(tmp_path, no_registry):
    folder = _folder(tmp_path / "run", {"bad": 0.2, "good": 0.9})
    run = RunResults.load(folder)
    board = write_leaderboards(run)
    assert board.set_index("algorithm")["rank"].to_dict() == {"good": 1, "bad": 2}
    assert leaderboard_of(run) is board  # computed once, shared by every writer
    assert "higher is better" in (folder / "leaderboard.md").read_text()
    assert any("best good" in line and "higher is better" in line
               for line in summary_lines(run))
    report = write_reproduction(run).read_text()
    claim = [line for line in report.splitlines() if line.startswith("| good beats bad")]
    assert claim and claim[0].endswith("| holds |")
    assert "| above (better) |" in report  # 0.9 against the paper's 0.5 ± 0.01
    (section,) = build_context(run)["sections"]
    assert section["direction"] == "higher is better"
    assert [r["algorithm"] for r in section["leaderboard"]] == ["good", "bad"]


def test_compare_reads_the_recorded_direction(tmp_path, no_registry):
    base = _folder(tmp_path / "a", {"x": 0.9})
    lower = _folder(tmp_path / "b", {"x": 0.5})
    (change,) = [c for c in compare_runs(base, lower).changes if c.measure == METRIC]
    assert change.verdict == "worse"  # lower is worse for a metric better when higher
    (change,) = [c for c in compare_runs(lower, base).changes if c.measure == METRIC]
    assert change.verdict == "better"


def test_an_unrecorded_direction_is_said_not_guessed_silently(tmp_path, no_registry):
    folder = _folder(tmp_path / "old", {"bad": 0.2, "good": 0.9}, directions=False)
    with pytest.warns(UnrecordedDirection, match=METRIC):
        board = write_leaderboards(folder)
    # lower is better is assumed (and said): the order the old results implied
    assert board.set_index("algorithm")["rank"].to_dict() == {"bad": 1, "good": 2}


def _imports(tree: ast.AST) -> list[str]:
    """Absolute names imported anywhere in a module of moebench.reports (function bodies
    included; ``from .. import plugins`` is ``moebench.plugins``)."""
    package = ["moebench", "reports"]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            found += [prefix] + [f"{prefix}.{a.name}" for a in node.names]
    return found


def test_no_report_module_imports_the_plugin_registry():
    files = sorted(REPORTS.glob("*.py"))
    assert len(files) >= 8
    bad = [f"{f.name}: {name}" for f in files
           for name in _imports(ast.parse(f.read_text(encoding="utf-8")))
           if name in ("moebench.plugins", "moebench_plugins")
           or name.startswith(("moebench.plugins.", "moebench_plugins."))]
    assert not bad, bad


def test_ranks_say_ties_and_leave_algorithms_without_a_value_unranked():
    import pandas as pd

    from moebench.reports.leaderboard import format_rows, leaderboard

    def cell(alg, rep, value, status="max_iter"):
        return {"record": "final", "experiment": "e", "dataset": "d", "algorithm": alg,
                "repetition": rep, "status": status, "time": 1.0, "iteration": 5, "m": value}

    rows = [cell("a", r, 0.123451) for r in range(2)] + [cell("b", r, 0.123459) for r in range(2)]
    rows += [cell("c", r, 0.5) for r in range(2)] + [cell("d", r, 0.5) for r in range(2)]
    rows += [cell("skipped", r, float("nan"), "skipped") for r in range(2)]
    rows += [cell("diverged", r, float("nan"), "diverged") for r in range(2)]
    board = leaderboard(pd.DataFrame(rows), "m", {"m": "min"})
    text = {r[1]: (r[0], r[2]) for r in format_rows(board)}
    # 0.123451 and 0.123459 read the same at 4 digits: the table shows enough to tell them apart
    assert text["a"] == ("1", "0.12345 ± 0") and text["b"] == ("2", "0.12346 ± 0")
    assert text["c"][0] == text["d"][0] == "3="  # an exact tie says so
    assert text["skipped"][0] == text["diverged"][0] == "-"  # nothing to rank: no rank


def test_an_algorithm_that_diverged_on_some_seeds_ranks_after_those_that_never_did():
    """Its mean is over the survivors only (the seeds that went well): ranking it among the
    algorithms whose seeds all succeeded would reward diverging. Means that differ by rounding
    only (the same steps by two code paths) are a tie, printed alike."""
    import pandas as pd

    from moebench.reports.leaderboard import format_rows, leaderboard, mark_legend

    def cell(alg, rep, value, status="max_iter"):
        return {"record": "final", "experiment": "e", "dataset": "d", "algorithm": alg,
                "repetition": rep, "status": status, "time": 1.0, "iteration": 5, "m": value}

    rows = [cell("risky", 0, 0.01), cell("risky", 1, float("nan"), "diverged")]
    rows += [cell("steady", r, 0.5) for r in range(2)]
    rows += [cell("gd", r, 0.5107 + r * 0.01) for r in range(2)]
    rows += [cell("gradient-em", r, (0.5107 + r * 0.01) * (1 + 1e-14)) for r in range(2)]
    board = leaderboard(pd.DataFrame(rows), "m", {"m": "min"})
    text = {r[1]: (r[0], r[2]) for r in format_rows(board)}
    assert text["risky"] == ("4", "0.01 ± 0 §")  # best mean, ranked last, marked
    assert text["gd"] == text["gradient-em"] == ("2=", "0.5157 ± 0.005")  # not 12 digits
    assert text["steady"][0] == "1"
    assert any(line.startswith("§ some seeds diverged") for line in mark_legend(board))


def test_failures_name_the_algorithm_and_seed():
    import pandas as pd

    from moebench.reports.results import unsuccessful_cells
    from moebench.reports.summary import failure_kinds

    rows = [{"record": "final", "experiment": "e", "dataset": "d", "algorithm": alg,
             "repetition": rep, "status": "diverged", "message": f"blew up at iteration {it}"}
            for alg, rep, it in (("gd", 0, 29), ("gd", 2, 23), ("em", 1, 7), ("gd", 3, 9),
                                 ("gd", 4, 2))]
    frame = pd.DataFrame(rows)
    (kind,) = failure_kinds(frame)
    assert kind == ("diverged", "blew up at iteration 7 (and similar) (em seed 1, gd seed 0, "
                    "gd seed 2 and 2 more)", 5)
    (first, *_) = unsuccessful_cells(frame)
    assert first[1].startswith("blew up at iteration ") and " seed " in first[1]
