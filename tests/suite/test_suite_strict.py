"""Values a suite must refuse before anything runs, each with the field it is in.

Numbers beyond any budget (``max_iter: 1e30``), strings where numbers belong (``lr: '0.1'``),
unknown keys in ``quick`` blocks, ``n <= k`` datasets, labels with control characters, and
suite paths that are not regular files.
"""

from __future__ import annotations

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
