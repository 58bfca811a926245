"""The conformance kit, run over every registered algorithm on every available device."""

from __future__ import annotations

import pytest

from moebench import plugins
from moebench.testing import algorithm_checks

CASES = [
    pytest.param(check, id=f"{name}-{check_id}")
    for name in plugins.components("algorithms")
    for check_id, check in algorithm_checks(name)
]


@pytest.mark.parametrize("check", CASES)
def test_algorithm_conforms(check):
    check()


def test_every_first_party_algorithm_is_checked():
    checked = {case.id.split("-check_")[0] for case in CASES}
    assert {"joint-em", "gd"} <= checked
