"""moebench run -e/-a/-d, --dry-run, --budget-timeout, errors with "did you mean", progress
lines and the end-of-run summary; list and data list output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from moebench.cli import main
from moebench.progress import CellCosts
from moebench.suite import (
    SelectionError,
    load_suite,
    parse_selector,
    parse_suite,
    resolve,
    select,
    with_suggestions,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "suites" / "smoke.yaml")
PAPER = str(ROOT / "suites" / "paper.yaml")


def run(*args: str):
    return CliRunner().invoke(main, ["run", *args])


def test_selector_syntax():
    sel = parse_selector("gd[lr=[0.1, 0.5],optimizer=adam,batch_size=32]")
    assert sel.name == "gd"
    assert sel.values == {"lr": [0.1, 0.5], "optimizer": ["adam"], "batch_size": [32]}
    assert parse_selector(" joint-em ").values == {}
    for bad in ("gd[lr]", "[lr=1]", "gd[lr=[1,]"):
        with pytest.raises(SelectionError):
            parse_selector(bad)


def test_dry_run_prints_the_selected_grid(fresh_plugins, tmp_path):
    result = run(SMOKE, "--out", str(tmp_path), "--dry-run", "-e", "makkuva",
                 "-a", "gd[lr=[0.01,0.1]]", "-a", "joint-em", "-d", "synthetic-moe[k=3]")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "makkuva: 1 dataset variant(s) x 3 algorithm variant(s) x 3 seed(s) = 9 cells" in out
    assert "synthetic-moe[k=3]" in out and "gd[lr=0.01], gd[lr=0.1], joint-em" in out
    assert "1 experiment(s), 9 cells" in out and "fruytier" not in out
    assert not (tmp_path / "smoke").exists()
    whole = run(SMOKE, "--dry-run", "--seeds", "2")
    assert "2 experiment(s), 32 cells" in " ".join(whole.output.split())


def test_selection_keeps_references_of_kept_variants(fresh_plugins):
    suite = load_suite(PAPER)
    chosen = select(suite, ["fruytier-synthetic"], ["em", "gd[lr=1.0]"], ["symmoline"],
                    budget_timeout=7.5, source=PAPER)
    (exp,) = resolve(chosen, PAPER, quick=True)
    assert [a.id for a in exp.algorithms] == ["em", "gd[lr=1.0]"]
    assert exp.budget.timeout == 7.5  # the quick budget too
    claims = exp.reference.claims
    assert [(c.better, c.than, c.metric, c.iteration) for c in claims] == [
        ("em", "gd[lr=1.0]", "train_nll", 5), ("em", "gd[lr=1.0]", "train_nll", None),
        ("em", "gd[lr=1.0]", "param_error", 2), ("em", "gd[lr=1.0]", "param_error", None)]
    (full,) = resolve(select(suite, ["makkuva-table1"], budget_timeout=3), PAPER)
    assert full.budget.timeout == 3 and full.budget.max_iter == 100


def test_selection_is_validated_like_the_suite(fresh_plugins):
    bad = run(SMOKE, "--dry-run", "-a", "gd[lrr=0.1]")
    assert bad.exit_code == 2
    # one line, blaming the option (not the suite file), with a did-you-mean
    assert bad.output.strip().splitlines() == [
        "error: -a 'gd[lrr=0.1]': algorithm 'gd' has no parameter 'lrr'; did you mean 'lr'? "
        "(its parameters: lr, optimizer, batch_size, tol)"]
    wrong = run(SMOKE, "--dry-run", "-a", "gd[lr=fast]")
    assert wrong.exit_code == 2
    assert wrong.output.splitlines()[1:] == [
        f"  experiments[{i}].algorithms[0].params.lr: Input should be a valid number, unable to "
        "parse string as a number" for i in (0, 1)]


@pytest.mark.parametrize("args, hint", [
    (["-e", "makuva"], "did you mean 'makkuva'?"),
    (["-a", "joint-me"], "did you mean 'joint-em'?"),
    (["-d", "synthetic-mo"], "did you mean 'synthetic-moe'?"),
    (["--device", "cpx"], "did you mean 'cpu'?"),
])
def test_misspelt_names_get_a_suggestion_and_no_traceback(fresh_plugins, args, hint):
    result = run(SMOKE, "--dry-run", *args)
    assert result.exit_code == 2, result.output
    assert hint in result.output and "Traceback" not in result.output
    assert result.output.startswith("error:")


def test_suite_errors_get_suggestions():
    message = ("  algorithms[0].name (line 3): unknown algorithm 'jiont-em'; valid names: gd, "
               "joint-em")
    assert with_suggestions(message).endswith("(did you mean 'joint-em'?)")
    assert with_suggestions("unrelated") == "unrelated"


def test_missing_suite_file_is_one_line(fresh_plugins, tmp_path):
    result = run(str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    path = tmp_path / "nope.yaml"
    assert result.output == f"error: invalid suite {path}:\n  (file): no such suite file: {path}\n"


def test_budget_timeout_is_not_the_hard_limit():
    helps = CliRunner().invoke(main, ["run", "--help"]).output
    text = " ".join(helps.split())
    assert "--budget-timeout SECONDS" in text and "--timeout" in text
    assert "hard wall-clock limit per cell" in text


def test_run_prints_progress_lines_and_a_compact_summary(fresh_plugins, tmp_path):
    result = run(SMOKE, "--out", str(tmp_path), "-e", "fruytier", "-a", "joint-em",
                 "-a", "gd", "--seeds", "2", "--budget-timeout", "30")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "smoke: started" in out and "4/4 cells (100 %)" in out  # plain lines: no terminal
    assert "fruytier (ranked by param_error): best " in out and "cells: " in out
    directory = tmp_path / "smoke"
    assert f"  interactive report: {directory / 'report.html'}" in out.splitlines()
    assert (directory / "failures.md").read_text().startswith("# Failures and skips")
    assert (directory / "report.html").is_file()
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["experiments"][0]["budget"]["timeout"] == 30


def test_eta_accounts_for_cell_cost():
    plan = [("e", "d", "slow")] * 3 + [("e", "d", "fast")] * 3
    costs = CellCosts(plan, jobs=1)
    assert costs.eta() is None
    costs.finished({"experiment": "e", "dataset": "d", "algorithm": "slow", "time": 10.0})
    costs.finished({"experiment": "e", "dataset": "d", "algorithm": "fast", "time": 1.0,
                    "time_metrics": 0.5})
    assert costs.eta() == pytest.approx(2 * 10.0 + 2 * 1.5)
    assert costs.in_flight() == "e · d · slow"
    other = CellCosts([("e", "d", "a"), ("f", "d", "a")])
    other.finished({"experiment": "e", "dataset": "d", "algorithm": "a", "time": 2.0})
    # experiment f: no finished cell to go by, and e's 2 s cells are no bound on f's
    assert other.eta_text() == "?"


def test_list_keeps_bracketed_text(fresh_plugins):
    datasets = CliRunner().invoke(main, ["list", "datasets"]).output
    assert "[dB]" in datasets and "list[str]" in datasets
    assert "E[y|x]" in CliRunner().invoke(main, ["list", "metrics"]).output


def test_data_list_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.delenv("MOEBENCH_DATA", raising=False)
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["data", "list", "--no-verify"])
    out = " ".join(result.output.split())
    assert "searched in this order" in out and "$MOEBENCH_DATA (not set)" in out
    assert str(tmp_path / "cache") in out
    rows = json.loads(CliRunner().invoke(main, ["data", "list", "--json", "--no-verify"]).output)
    assert rows  # every source: the environment variable first, then its folder of the cache
    for r in rows:
        assert r["searched"][0] == "$MOEBENCH_DATA: (not set)", r
        assert r["searched"][1].startswith(f"cache: {tmp_path / 'cache'}/"), r


def test_failure_kinds_group_messages_that_differ_in_numbers():
    import pandas as pd

    from moebench.reports.summary import failure_kinds

    rows = [{"record": "final", "status": "diverged", "experiment": "e", "dataset": "d",
             "algorithm": "gd", "repetition": r,
             "message": f"objective blew up: 1.{r}e+07 at iteration {20 + r}, from 2.1"}
            for r in range(5)]
    rows.append({"record": "final", "status": "skipped", "experiment": "e", "dataset": "c",
                 "algorithm": "gd", "repetition": 0, "message": "cifar10: files not found"})
    kinds = failure_kinds(pd.DataFrame(rows))
    assert kinds[0] == ("diverged", "objective blew up: 1.0e+07 at iteration 20, from 2.1 "
                        "(and similar) (gd seed 0, gd seed 1, gd seed 2 and 2 more)", 5)
    assert kinds[1] == ("skipped", "cifar10: files not found (gd seed 0)", 1)


def test_a_parameter_fixed_on_the_command_line_shows_in_the_label(fresh_plugins):
    out = " ".join(run(SMOKE, "--dry-run", "-e", "makkuva", "-a", "gd[lr=0.1]",
                       "-a", "mirror-em[eta=0.5]", "-a", "mirror-em[eta=1.0]").output.split())
    # gd's lr and mirror-em's eta changed: the labels say so; eta=0.5 is the suite's own value
    assert "algorithms: gd[lr=0.1], mirror-em, mirror-em[eta=1.0]" in out
    suite = load_suite(PAPER)
    (exp,) = resolve(select(suite, ["fruytier-synthetic"], ["em[eta=0.5]"], ["symmoline"],
                            source=PAPER), PAPER, quick=True)
    assert [a.id for a in exp.algorithms] == ["em[eta=0.5]"]  # not "em": it is not EM
    assert exp.reference is None or not exp.reference.claims  # claims about "em" dropped


def test_a_fixed_parameter_beside_a_swept_one_shares_its_bracket(fresh_plugins):
    """``-a 'gd[lr=[0.1,0.5],optimizer=adam]'``: one bracket per variant, the swept keys
    first whatever the order they are typed in; one fixed parameter alone reads as before."""
    for selector in ("gd[lr=[0.1,0.5],optimizer=adam]", "gd[optimizer=adam,lr=[0.1,0.5]]"):
        out = " ".join(run(SMOKE, "--dry-run", "-e", "fruytier", "-a", selector).output.split())
        assert "algorithms: gd[lr=0.1,optimizer=adam], gd[lr=0.5,optimizer=adam] " in out, out
    suite = load_suite(PAPER)  # its gd sweeps lr: a key fixed on the command line joins it
    (exp,) = resolve(select(suite, ["fruytier-synthetic"], ["gd[optimizer=adam]", "gd", "em"],
                            ["symmoline"], source=PAPER), PAPER, quick=True)
    ids = [a.id for a in exp.algorithms]
    assert ids == ["gd[lr=0.3,optimizer=adam]", "gd[lr=1.0,optimizer=adam]",
                   "gd[lr=3.0,optimizer=adam]", "gd[lr=0.3]", "gd[lr=1.0]", "gd[lr=3.0]", "em"]
    assert exp.algorithms[1].params["optimizer"] == "adam" and exp.algorithms[1].params["lr"] \
        == 1.0 and "optimizer" not in exp.algorithms[4].params
    # the paper's claims about its gd variants stay with them, not with the adam ones
    assert exp.reference.claims and {c.than for c in exp.reference.claims} <= {"gd[lr=0.3]",
                                                                             "gd[lr=1.0]"}


def test_a_key_the_suite_sweeps_keeps_its_place_when_the_command_line_sweeps_it(fresh_plugins):
    text = ("name: s\ndatasets: [{name: symmoline}]\nalgorithms:\n"
            "  - {name: gd, grid: {lr: [0.1, 0.5], batch_size: [10, 20]}}\n")
    (exp,) = resolve(select(parse_suite(text), algorithms=["gd[lr=[1.0],tol=0.001]"]))
    assert [a.id for a in exp.algorithms] == ["gd[lr=1.0,batch_size=10,tol=0.001]",
                                              "gd[lr=1.0,batch_size=20,tol=0.001]"]
