"""The conformance kit, run over every registered algorithm, on every model family it fits
and every available device."""

from __future__ import annotations

import pytest

from moebench import plugins
from moebench.errors import UnsupportedProblem
from moebench.testing import DEFAULT_DATASET, algorithm_checks

DATASETS = [
    DEFAULT_DATASET,
    ("symmoline", {"n": 300, "n_test": 50, "d": 4}),
    ("symmologe", {"n": 300, "n_test": 50, "d": 4}),
    ("synthetic-logistic-moe", {"n": 300, "n_test": 50, "d": 4, "k": 2, "n_classes": 3}),
]


def _cases():
    cases, families = [], {}
    for name in plugins.components("algorithms"):
        for dataset in DATASETS:
            try:
                checks = list(algorithm_checks(name, dataset=dataset))
            except UnsupportedProblem:
                continue
            families.setdefault(name, []).append(dataset[0])
            cases += [pytest.param(check, id=f"{name}-{dataset[0]}-{check_id}")
                      for check_id, check in checks]
    return cases, families


CASES, FAMILIES = _cases()


@pytest.mark.parametrize("check", CASES)
def test_algorithm_conforms(check):
    check()


def test_every_algorithm_is_checked_on_the_families_it_fits():
    assert set(FAMILIES) >= {"tensor-em", "joint-em", "mirror-em", "gradient-em", "gd",
                             "linear-regression"}
    assert set(FAMILIES["tensor-em"]) == {"synthetic-moe"}
    assert set(FAMILIES["linear-regression"]) == {"synthetic-moe"}
    for name in ("joint-em", "mirror-em", "gradient-em", "gd"):
        assert set(FAMILIES[name]) == {d for d, _ in DATASETS}, name
