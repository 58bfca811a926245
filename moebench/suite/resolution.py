"""Resolving a parsed suite: check it against the plugins and expand every grid.

:func:`resolve` counts the cells first (:func:`~moebench.suite.counting.check_size`), then,
experiment by experiment, picks its metrics and ranking metric, expands each entry's grid into
:class:`Variant` s whose parameters the plugin accepts, checks ids and references and merges
the budgets. Every problem found is reported at once, with its YAML path.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from .. import plugins
from ..errors import PluginError
from ..model import InitSpec
from .checks import (
    check_device,
    check_distinct_ids,
    check_model_choice,
    check_phase_experiments,
    check_reference,
    plugin_failure,
    validate_params,
)
from .counting import check_size, quick_settings, repetitions, suite_experiments
from .labels import unprintable
from .problems import Problems, unknown_parameter, validation_message
from .resolved import ResolvedExperiment, Variant, variant_id
from .schema import AlgorithmEntry, Budget, Component, DatasetEntry, Experiment, Suite

DEFAULT_METRICS = ["param_error", "train_nll", "test_nll", "test_mse"]


def _expand(
    entry: Component, kind: str, loc: tuple[Any, ...], problems: Problems, quick: bool = False
) -> list[Variant]:
    """The variants of one suite entry (at YAML path ``loc``) whose parameters its plugin
    accepts; each rejected grid point is recorded in ``problems`` with its path.

    The entry's ``quick`` values are checked too when ``quick`` is false (what ``--quick``
    would run): a typo there is found now, not in the smoke run.
    """
    if isinstance(entry, DatasetEntry) and entry.model is not None:
        check_model_choice(entry.model, loc + ("model",), problems)
    try:
        cls = plugins.get(kind, entry.name)
    except PluginError as exc:
        problems.add(loc + ("name",), str(exc))
        return []
    _check_grid_text(entry, loc, problems)
    keys = list(entry.grid)
    variants = []
    for indices in itertools.product(*(range(len(entry.grid[k])) for k in keys)):
        point = {k: entry.grid[k][i] for k, i in zip(keys, indices, strict=True)}
        position = dict(zip(keys, indices, strict=True))
        merged = {**entry.params, **point}
        if quick:
            merged.update(entry.quick)
        exc = validate_params(cls, merged)
        _param_problems(exc, cls, entry, kind, loc, point, position, quick, problems)
        if entry.quick and not quick:  # what --quick would run
            _param_problems(validate_params(cls, {**merged, **entry.quick}), cls, entry, kind,
                            loc, point, position, True, problems, only_quick=exc is not None)
        if exc is not None:
            continue
        model = entry.model if isinstance(entry, DatasetEntry) else None
        own = entry.budget if isinstance(entry, AlgorithmEntry) else None
        reference = isinstance(entry, AlgorithmEntry) and entry.reference
        variants.append(Variant(variant_id(entry, point), entry.name, merged, model, own,
                                reference))
    return variants


def _check_grid_text(entry: Component, loc: tuple[Any, ...], problems: Problems) -> None:
    """A string a grid sweeps becomes part of its variants' ids (``table[target=price]``): it
    must not hold what a label must not (:func:`~moebench.suite.labels.unprintable`)."""
    for key, values in entry.grid.items():
        for i, value in enumerate(values):
            found = unprintable(value) if isinstance(value, str) else None
            if found:
                problems.add(loc + ("grid", key, i),
                             f"{found}: a grid value names its variants on leaderboards, so it "
                             "must not hold control or format characters (newlines, NUL, "
                             "direction overrides)")


def _param_problems(
    exc: Exception | None, cls: type, entry: Component, kind: str, loc: tuple[Any, ...],
    point: dict[str, Any], position: dict[str, int], quick: bool, problems: Problems,
    only_quick: bool = False
) -> None:
    """Record what the plugin's parameter check ``exc`` says of one grid ``point`` of
    ``entry``, each at the YAML path of the value it blames.

    With ``quick`` the entry's quick values were applied; with ``only_quick`` as well, only
    the problems of those values are recorded (the others were, without them).
    """
    if exc is None:
        return
    if not isinstance(exc, ValidationError):
        if not only_quick:
            problems.add(loc + ("params",), plugin_failure(exc))
        return
    for err in exc.errors():
        field = err["loc"][0] if err["loc"] else None
        if only_quick and not (quick and field in entry.quick):
            continue
        if quick and field in entry.quick:
            where = loc + ("quick", field)
        elif field in point and err["type"] == "extra_forbidden":
            where = loc + ("grid", field)  # the name is wrong, whatever the value
        elif field in point:
            where = loc + ("grid", field, position[field])
        else:
            where = loc + ("params",) + tuple(err["loc"])
        msg = validation_message(err)
        if err["type"] == "extra_forbidden":
            msg = unknown_parameter(err["loc"][-1] if err["loc"] else "?",
                                    f"{kind[:-1]} {entry.name!r}",
                                    list(cls.Params.model_fields))
        problems.add(where, msg)


def _with_budget(variant: Variant, base: Budget, own: bool = True) -> Variant:
    """``variant`` with its own budget (the fields its entry sets) merged over ``base``
    (``own=False``: without a budget of its own)."""
    if variant.budget is None:
        return variant
    if not own:
        return replace(variant, budget=None)
    own = {k: getattr(variant.budget, k) for k in variant.budget.model_fields_set}
    return replace(variant, budget=Budget.model_validate({**base.model_dump(), **own}))


def _metrics(
    suite: Suite, exp: Experiment, loc: tuple[Any, ...], names: dict[str, type],
    problems: Problems
) -> list[str]:
    """The experiment's metrics (its own, the suite's or the defaults); each must be among
    the registered metric ``names``."""
    metrics = exp.metrics or suite.metrics or DEFAULT_METRICS
    metrics_loc = loc + ("metrics",) if exp.metrics else ("metrics",)
    for j, m in enumerate(metrics):
        if m not in names:
            problems.add(
                metrics_loc + (j,),
                f"unknown metric {m!r}; valid names: {', '.join(names)}",
            )
    return metrics


def _rank_by(
    suite: Suite, exp: Experiment, loc: tuple[Any, ...], metrics: list[str], problems: Problems
) -> str:
    """The metric the experiment's leaderboards rank by: one of its ``metrics``."""
    board = exp.leaderboard or suite.leaderboard
    rank_by = board.rank_by if board else metrics[0]
    if rank_by not in metrics:
        problems.add(
            loc + ("leaderboard", "rank_by") if exp.leaderboard else ("leaderboard", "rank_by"),
            f"{rank_by!r} is not one of this experiment's metrics ({', '.join(metrics)})",
        )
    return rank_by


def _variants(
    entries: list[DatasetEntry] | list[AlgorithmEntry],
    kind: str,
    loc: tuple[Any, ...],
    problems: Problems,
    quick: bool,
) -> list[Variant]:
    """Every valid variant of the experiment's ``kind`` entries, in the suite's order."""
    variants: list[Variant] = []
    for j, entry in enumerate(entries):
        variants += _expand(entry, kind, loc + (kind,) + (j,), problems, quick)
    return variants


def _resolve_experiment(
    suite: Suite,
    exp: Experiment,
    loc: tuple[Any, ...],
    metric_names: dict[str, type],
    problems: Problems,
    quick: bool,
    seeds: int | None,
) -> ResolvedExperiment:
    """One experiment of ``suite`` (at YAML path ``loc``) checked and expanded."""
    metrics = _metrics(suite, exp, loc, metric_names, problems)
    rank_by = _rank_by(suite, exp, loc, metrics, problems)
    datasets = _variants(exp.datasets, "datasets", loc, problems, quick)
    algorithms = _variants(exp.algorithms, "algorithms", loc, problems, quick)
    check_distinct_ids(loc, datasets, algorithms, problems)
    check_reference(exp, loc, metrics, datasets, algorithms, problems)
    fast = quick_settings(suite, exp, quick)
    budget = fast.budget or exp.budget or suite.budget or Budget()
    # an entry's own budget is merged over the experiment's; a quick budget replaces both
    algorithms = [_with_budget(v, budget, own=not fast.budget) for v in algorithms]
    return ResolvedExperiment(
        name=exp.name,
        description=exp.description or suite.description,
        repetitions=repetitions(suite, exp, quick, seeds),
        budget=budget,
        init=exp.init or suite.init or InitSpec(),
        metrics=list(metrics),
        rank_by=rank_by,
        datasets=datasets,
        algorithms=algorithms,
        reference=exp.reference,
        figures=tuple(exp.figures),
    )


def resolve(
    suite: Suite,
    source: str = "<suite>",
    quick: bool = False,
    seeds: int | None = None,
    *,
    max_cells: int | None = None,
) -> list[ResolvedExperiment]:
    """Check a parsed suite against the registered plugins and expand every grid.

    Parameters
    ----------
    suite
        A parsed suite (:func:`parse_suite`, :func:`load_suite`).
    source
        File name used in error messages.
    quick
        Apply the suite's and experiments' ``quick`` settings and the components' ``quick``
        parameters instead of the normal ones.
    seeds
        The CLI's ``--seeds``: replaces every experiment's number of repetitions.
    max_cells
        Refuse a suite with more cells than this (see :func:`count_cells`), before expanding
        anything; ``None``: no limit but :data:`MAX_CELLS`, which always applies. The CLI
        passes :data:`MAX_CELLS_WITHOUT_CONFIRMATION` unless ``--yes`` is given.

    Returns
    -------
    list[ResolvedExperiment]
        One per experiment, with every grid expanded into variants.

    Raises
    ------
    SuiteError
        Listing every unknown plugin (with the valid names), invalid plugin parameter,
        unknown metric or device, and duplicate id, each with its YAML path; or, alone, a
        suite with too many cells.
    """
    problems = Problems(source, suite._lines)
    check_size(suite, quick, seeds, max_cells, problems)
    check_device(suite.device, problems)
    raw, prefix = suite_experiments(suite)
    resolved, seen_names = [], set()
    metric_names = plugins.components("metrics")
    for i, exp in enumerate(raw):
        loc = prefix + (i,) if prefix else ()
        if exp.name in seen_names:
            problems.add(loc + ("name",), f"duplicate experiment name {exp.name!r}")
        seen_names.add(exp.name)
        resolved.append(
            _resolve_experiment(suite, exp, loc, metric_names, problems, quick, seeds)
        )
    check_phase_experiments(raw, prefix, problems)
    problems.raise_if_any()
    return resolved
