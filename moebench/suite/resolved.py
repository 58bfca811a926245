"""The resolved form of a suite, what the runner executes, and how a variant is named.

:class:`Variant` is one point of a component's grid, named by :func:`variant_id`;
:class:`ResolvedExperiment` holds an experiment's settings and its expanded variants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..model import InitSpec
from .schema import Budget, Component, Figure, ModelChoice, Reference


@dataclass(frozen=True)
class Variant:
    """One point of a component's grid."""

    id: str
    name: str
    params: dict[str, Any]
    model: ModelChoice | None = None
    #: An algorithm entry's own budget (already merged over the experiment's), else ``None``.
    budget: Budget | None = None
    #: An algorithm entry marked ``reference``: shown on the leaderboards, not ranked.
    reference: bool = False


@dataclass(frozen=True)
class ResolvedExperiment:
    """One experiment as the runner executes it: its settings and every variant expanded."""

    name: str
    description: str
    repetitions: int
    budget: Budget
    init: InitSpec
    metrics: list[str]
    rank_by: str
    datasets: list[Variant]
    algorithms: list[Variant]
    reference: Reference | None = None
    figures: tuple[Figure, ...] = ()

    def budget_for(self, algorithm: Variant) -> Budget:
        """The budget of ``algorithm``'s cells: its own (``budget:`` in its entry) or ours."""
        return algorithm.budget if algorithm.budget is not None else self.budget


def variant_id(entry: Component, point: dict[str, Any]) -> str:
    """The id of the variant of ``entry`` at grid ``point``, as leaderboards show it.

    Parameters
    ----------
    entry
        A suite entry (its ``label`` or plugin ``name`` is the base of the id).
    point
        The grid values of this variant, in the grid's order (empty without a grid).

    Returns
    -------
    str
        The entry's ``label`` (or else plugin ``name``), followed for a grid point by
        ``[key=value,...]`` (values in compact JSON unless strings).
    """
    if entry.label and not point:
        return entry.label
    base = entry.label or entry.name
    if not point:
        return base
    inner = ",".join(f"{k}={_short(v)}" for k, v in point.items())
    return f"{base}[{inner}]"


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)  # default: dates, bytes, ...
