"""Phase diagrams: per setting, the fraction of seeds where an algorithm reached the optimum.

A phase figure of a suite (``{kind: phase, x: k, y: init.scale, algorithm: joint-em,
reference: mle-from-truth}``) names two axes, the algorithm judged and a reference that finds
the optimum of each seed (``mle-from-truth``: joint EM started at the truth). A seed of a
setting is one dataset variant and repetition of one of the figure's experiments; both
algorithms fit the same data there. The seed **reached the optimum** when the algorithm's final
objective ``f`` (``train_nll``) is at most the reference's ``f_ref`` plus ``tolerance * max(1,
|f_ref|)``, or lower; a seed whose algorithm cell did not succeed (diverged, error, crashed) or
ended on a non-finite value did not; a seed without a successful reference cell, or without an
algorithm cell at all, cannot be judged and is counted apart. A second view counts the seeds
whose final ``param_error`` is at most :data:`PARAM_FACTOR` times the reference's.

Two diagrams of the same slice (axes, reference, metric and experiments) judge two algorithms on
the same seeds; the later one's finding says whether its algorithm reached the optimum where the
earlier one's failed (:func:`link_baselines`, :func:`phase_comparison`): whether "B succeeds
where A gets stuck" holds anywhere in the grid.

Everything is read from the results rows and the manifest (the experiments' ``init`` for an
``init.*`` axis, the rows' ``dataset_params`` for a dataset axis), never from the plugins.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .results import SUCCESS

__all__ = ["FAILURE_FRACTION", "PARAM_FACTOR", "STOPPED", "PhaseCell", "PhaseTable", "axis_text",
           "link_baselines", "phase_comparison", "phase_finding", "phase_table", "same_slice"]

#: A setting where fewer than this fraction of the judged seeds reached the optimum is where
#: the algorithm "fails".
FAILURE_FRACTION = 0.9
#: The second view: a seed's final ``param_error`` within this factor of the reference's.
PARAM_FACTOR = 2.0
#: Statuses of a cell that the budget stopped before its own convergence test.
STOPPED = ("max_iter", "timeout")


@dataclass
class PhaseCell:
    """One setting (``x``, ``y``) of a phase diagram."""

    x: Any
    y: Any
    judged: int = 0  #: seeds with a reference and an algorithm cell
    reached: int = 0  #: of those, seeds where the algorithm reached the optimum
    unjudged: int = 0  #: seeds without a successful reference cell or without an algorithm cell
    param_judged: int = 0  #: seeds where both final ``param_error`` values are finite, or failed
    param_reached: int = 0  #: of those, ``param_error`` <= PARAM_FACTOR x the reference's
    #: judged seeds that missed the optimum when the budget stopped them (max_iter, timeout):
    #: perhaps slow rather than stuck
    stopped: int = 0

    @property
    def fraction(self) -> float:
        """``reached / judged`` (NaN without a judged seed)."""
        return self.reached / self.judged if self.judged else math.nan


@dataclass
class PhaseTable:
    """The success fractions of one phase figure, and the relative gaps they come from."""

    x: str
    y: str
    algorithm: str
    reference: str
    metric: str
    tolerance: float
    xs: list[Any] = field(default_factory=list)
    ys: list[Any] = field(default_factory=list)
    cells: dict[tuple[Any, Any], PhaseCell] = field(default_factory=dict)
    #: ``(f - f_ref) / max(1, |f_ref|)`` of every judged seed whose algorithm cell succeeded.
    gaps: list[float] = field(default_factory=list)
    #: The experiments whose seeds the diagram gathers.
    experiments: tuple[str, ...] = ()
    #: A diagram of the same slice for another algorithm, whose failing settings this one's
    #: finding revisits (set by :func:`link_baselines`).
    baseline: PhaseTable | None = field(default=None, repr=False, compare=False)

    def cell(self, x: Any, y: Any) -> PhaseCell | None:
        """The setting (``x``, ``y``), or ``None`` where the grid has no seed."""
        return self.cells.get((x, y))

    def failing(self) -> list[PhaseCell]:
        """Settings with judged seeds where the fraction is below :data:`FAILURE_FRACTION`."""
        return [c for c in self.cells.values()
                if c.judged and c.fraction < FAILURE_FRACTION]


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else (1, str(value))


def axis_text(value: Any) -> str:
    """An axis value as the tables print it (``3.0`` as ``3``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _axis_values(finals: pd.DataFrame, axis: str,
                 inits: dict[str, dict[str, Any]]) -> pd.Series:
    """The value of ``axis`` on each row: the experiment's ``init.*`` or the dataset's
    parameter (``None`` where a row's dataset does not set it)."""
    if axis.startswith("init."):
        key = axis.split(".", 1)[1]
        return finals["experiment"].map(lambda e: (inits.get(e) or {}).get(key))
    parsed = {text: json.loads(text) if isinstance(text, str) and text else {}
              for text in finals["dataset_params"].unique()}
    return finals["dataset_params"].map(lambda t: parsed[t].get(axis))


def _finals(results: pd.DataFrame, experiments: list[str], algorithm: str) -> pd.DataFrame:
    """One final row per (experiment, dataset, repetition) of ``algorithm``."""
    rows = results[(results["record"] == "final") & results["experiment"].isin(experiments)
                   & (results["algorithm"] == algorithm)]
    return rows.drop_duplicates(["experiment", "dataset", "repetition"], keep="last")


def phase_table(results: pd.DataFrame, figure: dict[str, Any], owner: str,
                experiments: list[dict[str, Any]]) -> PhaseTable:
    """The success fraction of every setting of one phase figure.

    Parameters
    ----------
    results
        A run's rows (``results.parquet``).
    figure
        The phase figure as the manifest records it (``x``, ``y``, ``algorithm``,
        ``reference``, ``experiments``, ``metric``, ``tolerance``).
    owner
        The experiment that declares the figure (its seeds when ``experiments`` is empty).
    experiments
        The manifest's experiments (their ``init`` gives the ``init.*`` axes).

    Returns
    -------
    PhaseTable
        Settings sorted by axis value; empty where no row of ``algorithm`` exists.
    """
    names = list(figure.get("experiments") or []) or [owner]
    inits = {e["name"]: dict(e.get("init") or {}) for e in experiments}
    metric, tol = figure.get("metric", "train_nll"), float(figure.get("tolerance", 1e-4))
    table = PhaseTable(figure["x"], figure["y"], figure["algorithm"], figure["reference"],
                       metric, tol, experiments=tuple(names))
    if "dataset_params" not in results or results.empty:
        return table
    key = ["experiment", "dataset", "repetition"]
    alg = _finals(results, names, figure["algorithm"])
    ref = _finals(results, names, figure["reference"])
    ref = ref[ref["status"].isin(SUCCESS)]
    columns = [c for c in (metric, "param_error") if c in results]
    both = alg[[*key, "status", "dataset_params", *columns]].merge(
        ref[[*key, "dataset_params", *columns]], on=key, how="outer", suffixes=("", "_ref"),
        indicator="pairing")
    both["dataset_params"] = both["dataset_params"].fillna(both["dataset_params_ref"])
    both["x_value"] = _axis_values(both, figure["x"], inits)
    both["y_value"] = _axis_values(both, figure["y"], inits)
    for row in both.to_dict("records"):
        _count(table, row)
    table.xs = sorted({c.x for c in table.cells.values()}, key=_sort_key)
    table.ys = sorted({c.y for c in table.cells.values()}, key=_sort_key)
    return table


def _count(table: PhaseTable, row: dict[str, Any]) -> None:
    """Add one seed (a merged algorithm/reference row) to its setting of ``table``."""
    x, y = row["x_value"], row["y_value"]
    cell = table.cells.setdefault((x, y), PhaseCell(x, y))
    if row["pairing"] != "both":  # no successful reference, or no algorithm cell
        cell.unjudged += 1
        return
    cell.judged += 1
    f, f_ref = (float(row.get(c, math.nan)) for c in (table.metric, table.metric + "_ref"))
    ok = row["status"] in SUCCESS and math.isfinite(f)
    if ok and math.isfinite(f_ref):
        gap = (f - f_ref) / max(1.0, abs(f_ref))
        table.gaps.append(gap)
        cell.reached += gap <= table.tolerance
        cell.stopped += gap > table.tolerance and row["status"] in STOPPED
    p, p_ref = (float(row.get(c, math.nan)) for c in ("param_error", "param_error_ref"))
    if math.isfinite(p_ref) and (math.isfinite(p) or not ok):
        cell.param_judged += 1
        cell.param_reached += bool(ok and p <= PARAM_FACTOR * p_ref)


def _setting(cell: PhaseCell, table: PhaseTable) -> str:
    return f"{table.x}={axis_text(cell.x)}, {table.y}={axis_text(cell.y)}"


def _names(cells: list[PhaseCell], table: PhaseTable) -> str:
    return "; ".join(_setting(c, table) for c in cells)


def _settings(cells: list[PhaseCell], table: PhaseTable) -> str:
    return "; ".join(f"{_setting(c, table)} ({c.reached}/{c.judged})" for c in cells)


def _in_grid_order(cells: list[PhaseCell]) -> list[PhaseCell]:
    return sorted(cells, key=lambda c: (_sort_key(c.y), _sort_key(c.x)))


def phase_finding(table: PhaseTable) -> str:
    """What the phase diagram found, in one paragraph: the settings where the algorithm
    reached the optimum in fewer than :data:`FAILURE_FRACTION` of its seeds, or that there
    were none in the grid tried; with the relative gaps that separate the two outcomes, how
    many of the misses the budget stopped, and, with a ``baseline``, :func:`phase_comparison`."""
    grid = (f"{table.x} in {{{', '.join(axis_text(v) for v in table.xs)}}} x {table.y} in "
            f"{{{', '.join(axis_text(v) for v in table.ys)}}}")
    judged = sum(c.judged for c in table.cells.values())
    if not judged:
        return (f"No seed of {table.algorithm} could be judged ({grid}): no successful "
                f"{table.reference} cell beside it.")
    rule = (f"{table.algorithm} reached the optimum ({table.metric} at most "
            f"{table.reference}'s + {table.tolerance:g} x max(1, |{table.metric}|))")
    gaps = np.asarray(table.gaps)
    within, beyond = gaps[gaps <= table.tolerance], gaps[gaps > table.tolerance]
    spread = (f" Relative gaps to {table.reference}: at most {within.max():.1e} on the seeds "
              "that reached it" if len(within) else f" Relative gaps to {table.reference}:")
    spread += (("," if len(within) else "") + f" {beyond.min():.1e} to {beyond.max():.1e} on "
               "the others." if len(beyond) else ".")
    missed = judged - sum(c.reached for c in table.cells.values())
    stopped = sum(c.stopped for c in table.cells.values())
    if stopped:
        spread += (f" {stopped} of the {missed} seeds that missed it were stopped by the budget "
                   "(max_iter or timeout) before converging: slow, perhaps, rather than stuck.")
    failing = _in_grid_order(table.failing())
    compared = f" {phase_comparison(table, table.baseline)}" if table.baseline else ""
    if not failing:
        return (f"{rule} in at least {FAILURE_FRACTION:.0%} of the seeds of every setting "
                f"tried ({grid}): a regime where it fails was not found in the grid "
                f"tried.{spread}{compared}")
    return (f"{rule} in fewer than {FAILURE_FRACTION:.0%} of the seeds at "
            f"{_settings(failing, table)}; in {len(table.cells) - len(failing)} other "
            f"setting(s) of the grid ({grid}) it did in at least {FAILURE_FRACTION:.0%}."
            f"{spread}{compared}")


def same_slice(a: PhaseTable, b: PhaseTable) -> bool:
    """Whether two diagrams judge their algorithms on the same seeds and settings: the same
    axes, reference, metric, tolerance and experiments."""
    return ((a.x, a.y, a.reference, a.metric, a.tolerance, a.experiments)
            == (b.x, b.y, b.reference, b.metric, b.tolerance, b.experiments))


def link_baselines(tables: list[PhaseTable]) -> None:
    """Give each diagram the first earlier diagram of the same slice with another algorithm as
    its ``baseline`` (the order of the suite's figures: the algorithm that may fail first)."""
    for n, table in enumerate(tables):
        table.baseline = next((t for t in tables[:n] if same_slice(t, table)
                               and t.algorithm != table.algorithm), None)


def phase_comparison(table: PhaseTable, baseline: PhaseTable) -> str:
    """Whether ``table``'s algorithm reached the optimum where ``baseline``'s did not.

    Parameters
    ----------
    table, baseline
        Phase tables of the same slice (:func:`same_slice`), for two algorithms.

    Returns
    -------
    str
        One paragraph: the settings where the baseline reached the optimum in fewer than
        :data:`FAILURE_FRACTION` of its seeds, with both algorithms' counts there; the claim
        "``table.algorithm`` reaches the optimum where ``baseline.algorithm`` does not" holds
        at those of them where ``table.algorithm`` did in at least that fraction, and was
        not found to hold in the grid tried where it held at none. Empty without a judged
        seed of the baseline.
    """
    alg, base = table.algorithm, baseline.algorithm
    claim = f"the claim that {alg} reaches the optimum where {base} does not"
    if not any(c.judged for c in baseline.cells.values()):
        return ""
    failing = _in_grid_order(baseline.failing())
    if not failing:
        return (f"{base} reached the optimum in at least {FAILURE_FRACTION:.0%} of the seeds "
                f"of every setting, so {claim} could not be tested in the grid tried.")
    pairs = [(c, table.cell(c.x, c.y)) for c in failing]
    judged = [(c, o) for c, o in pairs if o is not None and o.judged]
    where = "; ".join(
        f"{_setting(c, table)}: {base} {c.reached}/{c.judged}, {alg} "
        + (f"{o.reached}/{o.judged}" if o is not None and o.judged else "none judged")
        for c, o in pairs)
    lead = (f"Where {base} reached the optimum in fewer than {FAILURE_FRACTION:.0%} of the "
            f"seeds ({where}), ")
    if not judged:
        return f"{lead}no seed of {alg} could be judged: {claim} could not be tested."
    head = (f"{lead}{alg} reached it in {sum(o.reached for _, o in judged)}/"
            f"{sum(o.judged for _, o in judged)} seeds")
    held = [c for c, o in judged if o.fraction >= FAILURE_FRACTION]
    more = [c for c, o in judged if c.fraction < o.fraction < FAILURE_FRACTION]
    more_text = (f" It reached it more often than {base}, though in fewer than "
                 f"{FAILURE_FRACTION:.0%} of the seeds, at {_names(more, table)}."
                 if more else "")
    if len(held) == len(pairs):
        return (f"{head}, in at least {FAILURE_FRACTION:.0%} of the seeds of each: {claim} "
                "holds there.")
    if held:
        return (f"{head}: {claim} holds at {_names(held, table)} (at "
                f"least {FAILURE_FRACTION:.0%} of the seeds), not at the other "
                f"{len(pairs) - len(held)} setting(s).{more_text}")
    return (f"{head}, in fewer than {FAILURE_FRACTION:.0%} of the seeds of each: neither did "
            f"{alg}, and {claim} was not found to hold in the grid tried.{more_text}")
