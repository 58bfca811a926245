"""Values a suite must refuse before anything runs, each with the field it is in.

Numbers beyond any budget (``max_iter: 1e30``), strings where numbers belong (``lr: '0.1'``),
unknown keys in ``quick`` blocks, ``n <= k`` datasets, labels with control characters, and
suite paths that are not regular files.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from moebench.errors import SuiteError
from moebench.suite import MAX_ITER, parse_suite, resolve

SUITE = """\
name: strict
repetitions: 1
budget: {{max_iter: 5, timeout: 10}}
datasets:
  - name: synthetic-moe
    params: {{n: 200, d: 5, k: 2{dataset}}}
algorithms:
  - name: gd
    {algorithm}
"""


def suite(dataset: str = "", algorithm: str = "params: {lr: 0.1}", top: str = "") -> str:
    """A small valid suite with ``dataset`` added to the dataset's params, ``algorithm`` as
    the algorithm entry's other keys and ``top`` appended at the top level."""
    return SUITE.format(dataset=dataset, algorithm=algorithm) + top


def problems(text: str, quick: bool = False) -> list[tuple[str, str]]:
    """The (where, message) problems parsing and resolving ``text`` reports."""
    with pytest.raises(SuiteError) as info:
        resolve(parse_suite(text, "s.yaml"), "s.yaml", quick=quick)
    return info.value.problems


def accepted(text: str, quick: bool = False):
    return resolve(parse_suite(text, "s.yaml"), "s.yaml", quick=quick)


# -- item 2: iteration counts beyond any budget ------------------------------------------------

@pytest.mark.parametrize("value", ["1000000000000000000000000000000", "1.0e+30",
                                   str(MAX_ITER + 1)])
@pytest.mark.parametrize("where, text", [
    ("budget.max_iter", "top"),
    ("algorithms[0].budget.max_iter", "entry"),
    ("quick.budget.max_iter", "quick"),
])
def test_max_iter_beyond_the_bound_is_refused_naming_the_field(value, where, text):
    if text == "top":
        source = suite().replace("max_iter: 5", f"max_iter: {value}")
    elif text == "entry":
        source = suite(algorithm=f"budget: {{max_iter: {value}}}")
    else:
        source = suite(top=f"quick: {{budget: {{max_iter: {value}}}}}\n")
    ((loc, msg),) = problems(source)
    assert loc.startswith(where + " (line ")
    assert f"{MAX_ITER}" in msg.replace(",", "")


def test_max_iter_at_the_bound_is_accepted():
    (exp,) = accepted(suite(algorithm=f"budget: {{max_iter: {MAX_ITER}}}"))
    assert exp.algorithms[0].budget.max_iter == MAX_ITER


def test_reference_and_claim_iterations_are_bounded_too():
    source = f"""\
name: strict-ref
experiments:
  - name: e
    reference:
      source: paper
      values: [{{dataset: synthetic-moe, algorithm: gd, metric: param_error, mean: 1.0,
                 iteration: {10**30}}}]
      claims: [{{text: t, better: gd, than: gd, metric: param_error, iteration: 1.0e+30}}]
    datasets: [{{name: synthetic-moe}}]
    algorithms: [{{name: gd}}]
"""
    found = problems(source)
    assert [loc.split(" ")[0] for loc, _ in found] == [
        "experiments[0].reference.values[0].iteration",
        "experiments[0].reference.claims[0].iteration",
    ]
    assert all(str(MAX_ITER) in msg for _, msg in found)


def test_a_whole_number_written_as_a_float_is_an_integer():
    (exp,) = accepted(suite(algorithm="budget: {max_iter: 1.0e+3}"))
    assert exp.algorithms[0].budget.max_iter == 1000
    assert isinstance(exp.algorithms[0].budget.max_iter, int)
    ((loc, msg),) = problems(suite(algorithm="budget: {max_iter: 10.5}"))
    assert loc.startswith("algorithms[0].budget.max_iter") and "integer" in msg


# -- item 9: strings are not numbers ---------------------------------------------------------

STRING_NUMBERS = [
    # (suite text, the YAML path refused)
    (suite().replace("max_iter: 5", "max_iter: '3'"), "budget.max_iter"),
    (suite().replace("timeout: 10", "timeout: '5'"), "budget.timeout"),
    (suite().replace("repetitions: 1", "repetitions: '2'"), "repetitions"),
    (suite(top="seed: '7'\n"), "seed"),
    (suite(top="init: {scale: '2'}\n"), "init.scale"),
    (suite(algorithm="params: {lr: '0.1'}"), "algorithms[0].params.lr"),
    (suite(algorithm="grid: {lr: [0.1, '0.5']}"), "algorithms[0].grid.lr[1]"),
    (suite(dataset=", n_test: '100'"), "datasets[0].params.n_test"),
    (suite(dataset=", sigma: '0.3'"), "datasets[0].params.sigma"),
    (suite(algorithm="params: {lr: true}"), "algorithms[0].params.lr"),
    ("name: e\nexperiments:\n  - name: one\n    figures: [{metric: param_error, log_y: 'yes'}]"
     "\n    datasets: [{name: synthetic-moe}]\n    algorithms: [{name: gd}]\n",
     "experiments[0].figures[0].log_y"),
]


@pytest.mark.parametrize("source, where", STRING_NUMBERS)
def test_a_quoted_number_is_a_string_and_refused_naming_the_field(source, where):
    found = problems(source)
    assert [loc.split(" (line")[0] for loc, _ in found] == [where]
    ((_, msg),) = found
    assert "not the string" in msg or msg.endswith(", not true")


def test_the_refusal_of_a_quoted_number_says_to_drop_the_quotes():
    ((_, msg),) = problems(suite(algorithm="params: {lr: '0.1'}"))
    assert msg == ("Input should be a valid number, not the string '0.1': write numbers "
                   "without quotes")


def test_plugin_parameters_refuse_strings_for_numbers_and_numbers_for_bools():
    from moebench import plugins

    gd = plugins.get("algorithms", "gd")
    with pytest.raises(ValueError, match="valid number"):
        gd.Params.model_validate({"lr": "0.1"})
    table = plugins.get("datasets", "table")
    with pytest.raises(ValueError, match="valid boolean"):
        table.Params.model_validate({"path": "x.csv", "target": "y", "standardize": 1})


@pytest.mark.parametrize("written, value", [
    ("1", 1.0), ("1e-3", 1e-3), ("1E-3", 1e-3), ("2.5e-2", 0.025), ("1.0e-3", 1e-3),
    (".5", 0.5), ("3e0", 3.0),
])
def test_yaml_numbers_keep_working_for_float_parameters(written, value):
    from moebench import plugins

    (exp,) = accepted(suite(algorithm=f"params: {{lr: {written}, tol: {written}}}"))
    params = plugins.get("algorithms", "gd").Params.model_validate(exp.algorithms[0].params)
    assert params.lr == pytest.approx(value) and isinstance(params.lr, float)
    assert params.tol == pytest.approx(value)


def test_exponents_without_a_dot_are_floats_in_grids_and_ids_too():
    (exp,) = accepted(suite(algorithm="grid: {lr: [1e-3, 1e-2]}"))
    assert [v.params["lr"] for v in exp.algorithms] == [0.001, 0.01]
    assert [v.id for v in exp.algorithms] == ["gd[lr=0.001]", "gd[lr=0.01]"]


def test_a_whole_float_is_an_integer_plugin_parameter():
    from moebench import plugins

    (exp,) = accepted(suite(dataset=", n_test: 1e3"))
    params = plugins.get("datasets", "synthetic-moe").Params.model_validate(
        exp.datasets[0].params)
    assert params.n_test == 1000 and isinstance(params.n_test, int)
    assert ["datasets[0].params.n_test"] == [
        loc.split(" (line")[0] for loc, _ in problems(suite(dataset=", n_test: 100.5"))]


def test_command_line_values_are_read_as_the_suite_reads_them():
    from moebench.suite import parse_selector

    assert parse_selector("gd[lr=1e-3]").values == {"lr": [0.001]}
    assert parse_selector("gd[lr=[1e-3,2E-2]]").values == {"lr": [0.001, 0.02]}


# -- item 9: quick blocks are checked without --quick ------------------------------------------

@pytest.mark.parametrize("quick_block, where, words", [
    ("quick: {nn: 50}", "datasets[0].quick.nn", "unknown parameter 'nn'"),
    ("quick: {n: '50'}", "datasets[0].quick.n", "not the string '50'"),
    ("quick: {n: 0}", "datasets[0].quick.n", "greater than or equal to 1"),
])
@pytest.mark.parametrize("quick", [False, True])
def test_an_entry_quick_block_is_checked_with_and_without_quick(quick_block, where, words,
                                                                quick):
    source = suite().replace("    params: {n: 200", f"    {quick_block}\n    params: {{n: 200")
    ((loc, msg),) = problems(source, quick=quick)
    assert loc.split(" (line")[0] == where and words in msg


def test_an_algorithm_quick_block_is_checked_without_quick():
    ((loc, msg),) = problems(suite(algorithm="params: {lr: 0.1}\n    quick: {lrr: 0.5}"))
    assert loc.split(" (line")[0] == "algorithms[0].quick.lrr"
    assert "did you mean 'lr'" in msg


def test_a_valid_quick_block_changes_nothing_without_quick():
    source = suite().replace("    params: {n: 200", "    quick: {n: 50}\n    params: {n: 200")
    (exp,) = accepted(source)
    assert exp.datasets[0].params["n"] == 200
    (fast,) = accepted(source, quick=True)
    assert fast.datasets[0].params["n"] == 50


# -- item 9: n <= k fails before running ----------------------------------------------------

@pytest.mark.parametrize("dataset, params", [
    ("synthetic-moe", "{n: 2, k: 2}"),
    ("synthetic-moe", "{n: 3, k: 5, d: 10}"),
    ("synthetic-logistic-moe", "{n: 4, k: 4}"),
    ("synthetic-logistic-moe", "{n: 1, k: 2}"),
])
def test_a_synthetic_dataset_with_no_more_samples_than_experts_is_refused(dataset, params):
    source = f"""\
name: few
datasets: [{{name: {dataset}, params: {params}}}]
algorithms: [{{name: gd}}]
"""
    ((loc, msg),) = problems(source)
    assert loc.startswith("datasets[0].params")
    assert "n must be larger than k" in msg and "n=" in msg and "k=" in msg


@pytest.mark.parametrize("dataset", ["symmoline", "symmologe"])
def test_a_symmetric_mixture_needs_more_than_two_samples(dataset):
    source = f"name: few\ndatasets: [{{name: {dataset}, params: {{n: 2}}}}]\n" \
             "algorithms: [{name: joint-em}]\n"
    ((loc, msg),) = problems(source)
    assert loc.startswith("datasets[0].params") and "n must be larger than 2" in msg
    accepted(source.replace("n: 2", "n: 3"))


def test_a_grid_of_k_names_the_point_with_too_few_samples():
    source = """\
name: few
datasets:
  - name: synthetic-moe
    params: {n: 5, d: 9}
    grid: {k: [2, 5]}
algorithms: [{name: gd}]
"""
    ((loc, msg),) = problems(source)
    assert loc.startswith("datasets[0].params")
    assert msg.endswith("n=5 training samples for k=5 experts: n must be larger than k (each "
                        "expert is fitted on the samples it draws); raise n or lower k")


# -- item 11: labels without control or format characters -----------------------------------

BAD_CHARACTERS = {
    "\\0": "U+0000 (NUL)",
    "\\n": "U+000A (newline)",
    "\\e": "U+001B (escape)",
    "\\u202e": "U+202E (RIGHT-TO-LEFT OVERRIDE)",
    "\\u2066": "U+2066 (LEFT-TO-RIGHT ISOLATE)",
    "\\u200b": "U+200B (ZERO WIDTH SPACE)",
}

LABELLED = """\
name: labels
experiments:
  - name: {name}
    reference:
      source: {source}
      claims: [{{text: {claim}, better: gd, than: gd, metric: param_error}}]
    figures: [{{metric: param_error, title: {title}}}]
    datasets: [{{name: synthetic-moe, label: {dataset}}}]
    algorithms: [{{name: gd, label: {algorithm}}}]
"""
LABEL_FIELDS = {"name": "experiments[0].name",
                "source": "experiments[0].reference.source",
                "claim": "experiments[0].reference.claims[0].text",
                "title": "experiments[0].figures[0].title",
                "dataset": "experiments[0].datasets[0].label",
                "algorithm": "experiments[0].algorithms[0].label"}


def labelled(**bad: str) -> str:
    values = {"name": "e", "source": "paper", "claim": "c", "title": "t", "dataset": "data",
              "algorithm": "gd", **bad}
    return LABELLED.format(**values).replace("better: gd, than: gd",
                                             f"better: {values['algorithm']}, "
                                             f"than: {values['algorithm']}")


@pytest.mark.parametrize("escape, described", BAD_CHARACTERS.items())
@pytest.mark.parametrize("field", LABEL_FIELDS)
def test_a_label_with_a_control_or_format_character_is_refused(field, escape, described):
    found = problems(labelled(**{field: f'"a{escape}b"'}))
    assert [loc.split(" (line")[0] for loc, _ in found] == [LABEL_FIELDS[field]]
    ((_, msg),) = found
    assert msg.startswith(f"{described} at position 2: a label must not hold control or "
                          "format characters")


def test_labels_with_punctuation_and_other_scripts_are_accepted():
    (exp,) = accepted(labelled(algorithm='"gd | <b>fast</b> é 学习 😀"'))
    assert exp.algorithms[0].id == "gd | <b>fast</b> é 学习 😀"


@pytest.mark.parametrize("escape", ["\\0", "\\e", "\\u202e", "\\u2067"])
def test_descriptions_refuse_control_characters_and_direction_overrides(escape):
    found = problems(suite(top=f'description: "one{escape}two"\n'))
    assert [loc.split(" (line")[0] for loc, _ in found] == ["description"]


def test_descriptions_keep_their_lines_and_tabs():
    (exp,) = accepted(suite(top='description: "line one\\nline two\\twith a tab\\u00ad"\n'))
    assert exp.description == "line one\nline two\twith a tab\u00ad"


def test_a_grid_string_in_an_id_is_checked_like_a_label():
    source = suite(dataset="").replace("name: gd\n", "name: gd\n    grid: {optimizer: [adam, "
                                       "\"sgd\\u202e\"]}\n").replace("params: {lr: 0.1}", "")
    found = problems(source)
    assert found[0][0].split(" (line")[0] == "algorithms[0].grid.optimizer[1]"
    assert found[0][1].startswith("U+202E (RIGHT-TO-LEFT OVERRIDE) at position 4: a grid value")


# -- item 14: suite paths that are not regular files -----------------------------------------

def load_problems(path) -> list[tuple[str, str]]:
    from moebench.suite import load_suite

    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return info.value.problems


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_a_character_device_is_named_as_such():
    assert load_problems("/dev/zero") == [
        ("(file)", "/dev/zero is not a regular file: a character device")]


def test_a_folder_is_named_as_such(tmp_path):
    assert load_problems(tmp_path) == [("(file)", f"{tmp_path} is not a regular file: a folder")]


def test_a_missing_file_is_still_no_such_file(tmp_path):
    assert load_problems(tmp_path / "nope.yaml") == [
        ("(file)", f"no such suite file: {tmp_path / 'nope.yaml'}")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_named_as_such_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)
    # in a child process: opening a FIFO without a writer would block this one forever
    code = ("from moebench.errors import SuiteError\nfrom moebench.suite import load_suite\n"
            f"try:\n    load_suite({str(fifo)!r})\nexcept SuiteError as exc:\n"
            "    print(exc.problems[0][1])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == f"{fifo} is not a regular file: a FIFO (named pipe)"
