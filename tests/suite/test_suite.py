"""Suite validation: every mistake is caught before anything runs, with its YAML path."""

from __future__ import annotations

import textwrap

import pytest

from moebench.errors import SuiteError
from moebench.suite import load_suite, parse_suite, resolve
from moebench.suite.problems import unknown_key
from moebench.suite.schema import keys_at

GOOD = """
name: tiny
seed: 1
repetitions: 2
budget: {max_iter: 5, timeout: 10}
metrics: [param_error, test_mse]
leaderboard: {rank_by: test_mse}
datasets:
  - name: synthetic-moe
    params: {n: 200, d: 5, sigma: 0.3}
    grid: {k: [2, 3]}
algorithms:
  - name: joint-em
  - name: gd
    grid: {lr: [0.1, 0.5]}
"""


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(SuiteError) as info:
        resolve(parse_suite(textwrap.dedent(text), "s.yaml"), "s.yaml")
    return info.value.problems


def test_good_suite_expands_its_grids(fresh_plugins):
    (exp,) = resolve(parse_suite(GOOD))
    assert [d.id for d in exp.datasets] == ["synthetic-moe[k=2]", "synthetic-moe[k=3]"]
    assert [a.id for a in exp.algorithms] == ["joint-em", "gd[lr=0.1]", "gd[lr=0.5]"]
    assert exp.datasets[1].params == {"n": 200, "d": 5, "sigma": 0.3, "k": 3}
    assert exp.repetitions == 2 and exp.budget.max_iter == 5 and exp.rank_by == "test_mse"


def test_unknown_key_is_named_with_its_line(fresh_plugins):
    found = problems(GOOD.replace("budget:", "budgt:"))
    assert found == [("budgt (line 5)", "unknown key 'budgt'; did you mean 'budget'? (valid: "
                      "name, description, seed, device, dtype, datasets, algorithms, "
                      "experiments, memory_limit, quick, repetitions, budget, init, metrics, "
                      "leaderboard; x-* keys are ignored)")]


def test_nested_unknown_key(fresh_plugins):
    found = problems(GOOD.replace("max_iter: 5", "max_iters: 5"))
    assert found == [("budget.max_iters (line 5)", "unknown key 'max_iters'; did you mean "
                      "'max_iter'? (valid: max_iter, timeout, clock, wall_timeout)")]


MISSPELT_KEYS = """
name: many
budgett: {max_iter: 5}
init: {schem: random}
experiments:
  - name: a
    repetitions: two
    leaderbord: {rank_by: param_error}
    figures: [{metric: param_error, logy: true}]
    reference: {source: x, claims: [{text: t, better: gd, than: em, metric: x, iteraton: 1}]}
    datasets: [{name: symmoline, model: {nam: x}}]
    algorithms:
      - {name: gd, budget: {timout: 3}}
  - name: b
    quick: {repetition: 2}
    datasets: [{name: symmoline}]
    algorithms: [{name: gd, lable: x}]
"""


def test_every_misspelt_key_at_any_depth_is_listed_at_once_with_the_keys_valid_there():
    with pytest.raises(SuiteError) as info:
        parse_suite(MISSPELT_KEYS, "s.yaml")
    found = {where.split(" ")[0]: message for where, message in info.value.problems}
    hints = {where: message.split("; did you mean ")[1].split("?")[0]
             for where, message in found.items() if message.startswith("unknown key")}
    assert hints == {
        "budgett": "'budget'", "init.schem": "'scheme'", "experiments[0].leaderbord":
        "'leaderboard'", "experiments[0].figures[0].logy": "'log_y'",
        "experiments[0].reference.claims[0].iteraton": "'iteration'",
        "experiments[0].datasets[0].model.nam": "'name'",
        "experiments[0].algorithms[0].budget.timout": "'timeout'",
        "experiments[1].quick.repetition": "'repetitions'",
        "experiments[1].algorithms[0].lable": "'label'"}
    assert found["experiments[0].repetitions"].startswith("Input should be a valid integer")
    assert found["experiments[0].figures[0].logy"].endswith("(valid: kind, metric, title, log_y)")
    assert found["experiments[1].quick.repetition"].endswith("(valid: repetitions, budget)")
    assert found["experiments[0].datasets[0].model.nam"].endswith("(valid: name, params)")
    assert found["experiments[0].leaderbord"].endswith(
        "(valid: name, description, reference, figures, datasets, algorithms, quick, "
        "repetitions, budget, init, metrics, leaderboard)")
    assert len(found) == 10


def test_a_key_without_a_close_match_lists_the_valid_ones():
    with pytest.raises(SuiteError) as info:
        parse_suite(GOOD.replace("max_iter: 5", "zzz: 5"), "s.yaml")
    assert info.value.problems == [("budget.zzz (line 5)", "unknown key 'zzz'; valid: "
                                    "max_iter, timeout, clock, wall_timeout")]


def test_keys_at_walks_the_schema_and_knows_where_it_cannot():
    assert keys_at(("experiments", 3, "algorithms", 0)) == ["name", "label", "params", "grid",
                                                             "quick", "budget", "reference"]
    assert keys_at(("datasets", 1, "model")) == ["name", "params"]
    assert keys_at(("experiments", 0, "reference", "values", 2)) == [
        "dataset", "algorithm", "metric", "mean", "std", "iteration"]
    assert keys_at(("quick", "budget")) == ["max_iter", "timeout", "clock", "wall_timeout"]
    for nowhere in [("algorithms", 0, "params"), ("nope",), ("experiments", "a"),
                    ("seed",), ("budget", 0)]:
        assert keys_at(nowhere) is None, nowhere
    assert unknown_key("zzz", None) == "unknown key 'zzz' (check its spelling)"


def test_a_schema_error_does_not_hide_that_the_suite_has_no_experiments():
    """pydantic checks a suite's form only once every field is valid: the loader asks too."""
    with pytest.raises(SuiteError) as info:
        parse_suite("name: x\nbudgett: {max_iter: 5}\n", "s.yaml")
    assert [where for where, _ in info.value.problems] == ["budgett (line 2)",
                                                          "(top level) (line 1)"]
    assert info.value.problems[1][1] == ("Value error, a suite needs datasets and algorithms, "
                                         "or experiments")
    with pytest.raises(SuiteError) as info:
        parse_suite(GOOD.replace("budget:", "budgt:").split("algorithms:")[0], "s.yaml")
    assert info.value.problems[1] == ("(top level) (line 2)", "Value error, algorithms is "
                                      "missing")


def test_unknown_algorithm_lists_valid_names(fresh_plugins):
    ((where, message),) = problems(GOOD.replace("name: gd", "name: gradient-descnt"))
    assert where == "algorithms[1].name (line 14)"
    head, names = message.split("; valid names: ")
    assert head == "unknown algorithm 'gradient-descnt'"
    names = names.split(", ")
    assert names == sorted(names) and {"gd", "joint-em"} <= set(names)


def test_unknown_dataset(fresh_plugins):
    ((where, message),) = problems(GOOD.replace("synthetic-moe", "synthetc"))
    assert where == "datasets[0].name (line 9)"
    head, names = message.split("; valid names: ")
    assert head == "unknown dataset 'synthetc'"
    names = names.split(", ")
    assert names == sorted(names) and "synthetic-moe" in names


def test_wrong_type_names_the_field(fresh_plugins):
    ((where, message),) = problems(GOOD.replace("repetitions: 2", "repetitions: two"))
    assert where == "repetitions (line 4)"
    assert message == "Input should be a valid integer, unable to parse string as an integer"


def test_empty_grid_is_rejected(fresh_plugins):
    ((where, message),) = problems(GOOD.replace("{k: [2, 3]}", "{k: []}"))
    assert where == "datasets[0].grid.k (line 11)"
    assert message == "List should have at least 1 item after validation, not 0"


def test_empty_algorithm_list_is_rejected(fresh_plugins):
    text = GOOD.split("algorithms:")[0] + "algorithms: []\n"
    ((where, message),) = problems(text)
    assert where == "algorithms (line 12)"
    assert message == "List should have at least 1 item after validation, not 0"


def test_unknown_plugin_parameter(fresh_plugins):
    ((where, message),) = problems(GOOD.replace("- name: joint-em", "- name: joint-em\n"
                                                "    params: {tolerance: 0.1}"))
    assert where == "algorithms[0].params.tolerance (line 14)"
    head, valid = message.split("; valid: ")
    assert head == "unknown parameter 'tolerance' of algorithm 'joint-em'"
    assert "tol" in valid.split(", ")


def test_a_misspelt_parameter_gets_a_did_you_mean(fresh_plugins):
    text = GOOD.replace("- name: joint-em", "- name: joint-em\n    params: {tool: 0.1}")
    ((where, message),) = problems(text)
    assert where == "algorithms[0].params.tool (line 14)"
    assert message.startswith("unknown parameter 'tool' of algorithm 'joint-em'; did you "
                              "mean 'tol'? (valid: ")


def test_bad_grid_value_points_at_the_value(fresh_plugins):
    ((where, message),) = problems(GOOD.replace("{k: [2, 3]}", "{k: [2, three]}"))
    assert where == "datasets[0].grid.k[1] (line 11)"
    assert message == "Input should be a valid integer, unable to parse string as an integer"


def test_a_misspelt_grid_parameter_is_one_problem_at_its_key(fresh_plugins):
    """A wrong name is wrong for every value of its grid: one line at the key, not one per
    value; a wrong value still names its own position."""
    text = GOOD.replace("grid: {lr: [0.1, 0.5]}", "grid: {lrr: [0.1, 0.5, 1.0]}")
    assert problems(text) == [("algorithms[1].grid.lrr (line 15)",
                               "unknown parameter 'lrr' of algorithm 'gd'; did you mean 'lr'? "
                               "(valid: lr, optimizer, batch_size, tol)")]
    # crossed with a second grid key, a bad value fails in several grid points: still one line
    text = GOOD.replace("grid: {lr: [0.1, 0.5]}",
                        "grid: {lr: [0.1, fast], optimizer: [sgd, adam]}")
    assert problems(text) == [("algorithms[1].grid.lr[1] (line 15)",
                               "Input should be a valid number, unable to parse string as a "
                               "number")]


def test_unknown_metric_and_bad_rank(fresh_plugins):
    found = problems(GOOD.replace("[param_error, test_mse]", "[param_error, test_mase]"))
    assert [w for w, _ in found] == ["metrics[1] (line 6)", "leaderboard.rank_by (line 7)"]
    assert found[0][1].startswith("unknown metric 'test_mase'; valid names: ")
    assert "test_mse" in found[0][1].split("; valid names: ")[1].split(", ")
    assert found[1][1] == ("'test_mse' is not one of this experiment's metrics "
                           "(param_error, test_mase)")


def test_unknown_device(fresh_plugins):
    ((where, message),) = problems(GOOD.replace("seed: 1", "seed: 1\ndevice: tpu"))
    assert where == "device (line 4)"
    head, names = message.split("; valid names: ")
    assert head == "unknown device 'tpu'" and "cpu" in names.split(", ")


def test_malformed_yaml_gives_line_and_column(fresh_plugins):
    with pytest.raises(SuiteError) as info:
        parse_suite("name: x\ndatasets: [unclosed\n", "bad.yaml")
    ((where, message),) = info.value.problems
    assert where == "line 3, column 1"  # the end of the stream, where the "]" is missing
    assert message == ("malformed YAML: while parsing a flow sequence, expected ',' or ']', but "
                       "got '<stream end>'")


def test_duplicate_ids_need_labels(fresh_plugins):
    text = GOOD.replace("- name: joint-em", "- name: joint-em\n  - name: joint-em")
    ((where, message),) = problems(text)
    assert where == "algorithms (line 12)"
    assert message == "two entries have the id 'joint-em'; give them distinct labels"


def test_experiments_inherit_top_level_settings(fresh_plugins):
    text = """
    name: multi
    budget: {max_iter: 7}
    metrics: [test_mse]
    experiments:
      - name: a
        datasets: [{name: synthetic-moe}]
        algorithms: [{name: gd}]
      - name: b
        budget: {max_iter: 3}
        metrics: [train_nll]
        datasets: [{name: synthetic-moe}]
        algorithms: [{name: joint-em}]
    """
    a, b = resolve(parse_suite(textwrap.dedent(text)))
    assert (a.budget.max_iter, a.rank_by) == (7, "test_mse")
    assert (b.budget.max_iter, b.rank_by) == (3, "train_nll")


def test_missing_file(tmp_path):
    with pytest.raises(SuiteError) as info:
        load_suite(tmp_path / "nope.yaml")
    assert info.value.problems == [("(file)", f"no such suite file: {tmp_path / 'nope.yaml'}")]


def test_shipped_suites_are_valid(fresh_plugins):
    from pathlib import Path

    for path in sorted((Path(__file__).parents[2] / "suites").glob("*.yaml")):
        resolve(load_suite(path), str(path))


def test_quick_mode_overrides_sizes_and_seeds(fresh_plugins):
    text = GOOD.replace("repetitions: 2", "repetitions: 5\nquick: {repetitions: 1, budget: "
                        "{max_iter: 2}}").replace("params: {n: 200, d: 5, sigma: 0.3}",
                                                  "params: {n: 200, d: 5, sigma: 0.3}\n"
                                                  "    quick: {n: 50}")
    (full,) = resolve(parse_suite(text))
    (fast,) = resolve(parse_suite(text), quick=True)
    assert (full.repetitions, full.budget.max_iter, full.datasets[0].params["n"]) == (5, 5, 200)
    assert (fast.repetitions, fast.budget.max_iter, fast.datasets[0].params["n"]) == (1, 2, 50)
    (seeded,) = resolve(parse_suite(text), quick=True, seeds=3)
    assert seeded.repetitions == 3


def test_bad_quick_parameter_is_named(fresh_plugins):
    text = GOOD.replace("params: {n: 200, d: 5, sigma: 0.3}",
                        "params: {n: 200, d: 5, sigma: 0.3}\n    quick: {n: tiny}")
    with pytest.raises(SuiteError) as info:
        resolve(parse_suite(text, "s.yaml"), "s.yaml", quick=True)
    assert info.value.problems == [("datasets[0].quick.n (line 11)", "Input should be a valid "
                                    "integer, unable to parse string as an integer")]


def test_model_override_is_checked_before_running(fresh_plugins):
    text = GOOD.replace("    grid: {k: [2, 3]}", "    grid: {k: [2, 3]}\n"
                        "    model: {params: {noize: shared}}")
    ((where, message),) = problems(text)
    assert where == "datasets[0].model.params.noize (line 12)"
    head, valid = message.split("; did you mean 'noise'? (valid: ")
    assert head.startswith("unknown parameter 'noize' of model families ")
    assert "regression-moe" in head and "noise" in valid.split(", ")
    ((where, message),) = problems(text.replace("{params: {noize: shared}}",
                                                "{name: regresion-moe}"))
    assert where == "datasets[0].model.name (line 12)"
    head, names = message.split("; valid names: ")
    assert head == "unknown model 'regresion-moe'" and "regression-moe" in names.split(", ")
    resolve(parse_suite(text.replace("noize", "noise")))
