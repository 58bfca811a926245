"""Counting the cells of a suite before any grid is expanded (suites are untrusted input).

:func:`count_cells` multiplies the sizes of the grids; :func:`check_size` refuses a suite with
more cells than allowed, so that a hostile suite never makes :func:`moebench.suite.resolve`
expand millions of variants. The experiments of a suite and their repetitions are read here
too (:func:`suite_experiments`, :func:`repetitions`, :func:`quick_settings`).
"""

from __future__ import annotations

import math
from typing import Any

from .problems import Problems
from .schema import Component, Experiment, Quick, Suite

#: Suites with more cells than this need ``moebench run --yes``
#: (``resolve(..., max_cells=MAX_CELLS_WITHOUT_CONFIRMATION)``).
MAX_CELLS_WITHOUT_CONFIRMATION = 100_000
#: No suite may have more cells than this, confirmed or not: grids are not expanded beyond it.
MAX_CELLS = 10_000_000


def suite_experiments(suite: Suite) -> tuple[list[Experiment], tuple[Any, ...]]:
    """The suite's experiments (one, named after the suite, in the single form) and path.

    Parameters
    ----------
    suite
        A parsed suite.

    Returns
    -------
    experiments, prefix
        The experiments, and the YAML path of their list (``("experiments",)``, or ``()`` in
        the single form, where the experiment's keys are at the top level).
    """
    if suite.experiments is None:
        one = Experiment.model_construct(
            name=suite.name, datasets=suite.datasets, algorithms=suite.algorithms
        )
        return [one], ()
    return list(suite.experiments), ("experiments",)


def quick_settings(suite: Suite, exp: Experiment, quick: bool) -> Quick:
    """The ``quick`` settings in force for ``exp``: its own, else the suite's (none unless
    ``quick``)."""
    return (exp.quick or suite.quick or Quick()) if quick else Quick()


def repetitions(suite: Suite, exp: Experiment, quick: bool, seeds: int | None) -> int:
    """Seeds per cell of ``exp``: ``--seeds``, else the quick, experiment or suite setting, or 1."""
    fast = quick_settings(suite, exp, quick)
    return seeds or fast.repetitions or exp.repetitions or suite.repetitions or 1


def _grid_size(entry: Component) -> int:
    return math.prod(len(values) for values in entry.grid.values())


def _cell_counts(
    suite: Suite, quick: bool, seeds: int | None
) -> list[tuple[tuple[Any, ...], int, int, int]]:
    """Per experiment: its path, dataset variants, algorithm variants and repetitions."""
    raw, prefix = suite_experiments(suite)
    return [
        (
            prefix + (i,) if prefix else (),
            sum(_grid_size(entry) for entry in exp.datasets),
            sum(_grid_size(entry) for entry in exp.algorithms),
            repetitions(suite, exp, quick, seeds),
        )
        for i, exp in enumerate(raw)
    ]


def count_cells(suite: Suite, quick: bool = False, seeds: int | None = None) -> int:
    """Number of cells (runs of one algorithm variant on one dataset instance) of a suite.

    Computed from the sizes of the grids, without expanding them or checking the plugins, so
    it is cheap for any suite: ``sum over experiments of dataset variants x algorithm
    variants x repetitions``.

    Parameters
    ----------
    suite
        A parsed suite.
    quick, seeds
        As for :func:`moebench.suite.resolve` (``quick`` may change the repetitions,
        ``seeds`` replaces them).

    Returns
    -------
    int
        The number of cells :func:`moebench.suite.resolve` followed by a run would execute
        (before any variant is rejected as invalid).
    """
    return sum(d * a * r for _, d, a, r in _cell_counts(suite, quick, seeds))


def check_size(
    suite: Suite, quick: bool, seeds: int | None, max_cells: int | None, problems: Problems
) -> None:
    """Refuse a suite with too many cells before any grid is expanded.

    Parameters
    ----------
    suite, quick, seeds
        As for :func:`count_cells`.
    max_cells
        The limit (``None``: :data:`MAX_CELLS`, which also caps any larger limit).
    problems
        Where the refusal is recorded, naming the largest experiment.

    Raises
    ------
    SuiteError
        The suite has more cells than the limit.
    """
    counts = _cell_counts(suite, quick, seeds)
    total = sum(d * a * r for _, d, a, r in counts)
    limit = MAX_CELLS if max_cells is None else min(max_cells, MAX_CELLS)
    if total <= limit:
        return
    loc, d, a, r = max(counts, key=lambda c: c[1] * c[2] * c[3])
    part = (f"{'the largest experiment' if len(counts) > 1 else 'that is'}: {d:,} dataset "
            f"variant(s) x {a:,} algorithm variant(s) x {r:,} repetition(s)")
    if total > MAX_CELLS:
        advice = (f"no suite may have more than {MAX_CELLS:,} cells; make the grids smaller or "
                  "split the suite")
    else:
        advice = "pass --yes to run it anyway"
    problems.add(loc, f"the suite has {total:,} cells, more than {limit:,} ({part}); {advice}")
    problems.raise_if_any()
