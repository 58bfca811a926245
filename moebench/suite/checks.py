"""Checks of a parsed suite against the registered plugins and against its own ids.

Each check records what is wrong in a :class:`~moebench.suite.problems.Problems` (with the
YAML path) instead of raising, so that one :class:`SuiteError` lists every mistake.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import ValidationError

from .. import plugins
from ..errors import PluginError
from .problems import Problems, unknown_parameter, validation_message
from .resolved import Variant
from .schema import INIT_AXES, Experiment, ModelChoice, PhaseFigure


def validate_params(cls: type, params: dict[str, Any]) -> Exception | None:
    """Validate plugin parameters; the error (any exception a plugin's validator raises)."""
    try:
        cls.Params.model_validate(params)
    except ValidationError as exc:
        return exc
    except Exception as exc:  # a plugin validator that fails on odd values (OverflowError, ...)
        return exc
    return None


def plugin_failure(exc: Exception) -> str:
    """What to say when a plugin's parameter validator raised something other than a
    ``ValidationError``."""
    return f"the plugin's parameter check failed on these values: {type(exc).__name__}: {exc}"


def check_model_choice(choice: ModelChoice, loc: tuple[Any, ...], problems: Problems) -> None:
    """A model override must name a registered family and parameters it accepts.

    Without a ``name`` the family is the dataset's (known only once loaded): the parameters
    must then be valid for at least one registered family.
    """
    if choice.name is not None:
        try:
            families = {choice.name: plugins.get("models", choice.name)}
        except PluginError as exc:
            problems.add(loc + ("name",), str(exc))
            return
    else:
        families = plugins.components("models")
    first: Exception | None = None
    for cls in families.values():
        exc = validate_params(cls, choice.params)
        if exc is None:
            return
        first = first or exc
    if first is None:
        return
    if not isinstance(first, ValidationError):
        problems.add(loc + ("params",), plugin_failure(first))
        return
    for err in first.errors():
        msg = validation_message(err)
        if err["type"] == "extra_forbidden":
            valid = sorted({f for cls in families.values() for f in cls.Params.model_fields})
            msg = unknown_parameter(err["loc"][-1] if err["loc"] else "?",
                                    "model " + (repr(choice.name) if choice.name else
                                                "families " + ", ".join(families)), valid)
        problems.add(loc + ("params",) + tuple(err["loc"]), msg)


def check_device(device: str, problems: Problems) -> None:
    """The suite's ``device`` must name a registered device plugin."""
    try:
        plugins.get("devices", device)
    except PluginError as exc:
        problems.add(("device",), str(exc))


def check_distinct_ids(
    loc: tuple[Any, ...], datasets: list[Variant], algorithms: list[Variant], problems: Problems
) -> None:
    """No two dataset variants, and no two algorithm variants, of an experiment share an id."""
    for what, variants in (("datasets", datasets), ("algorithms", algorithms)):
        counts = Counter(v.id for v in variants)
        for dup in sorted(x for x, n in counts.items() if n > 1):
            problems.add(
                loc + (what,), f"two entries have the id {dup!r}; give them distinct labels"
            )


def check_reference(
    exp: Experiment,
    loc: tuple[Any, ...],
    metrics: list[str],
    datasets: list[Variant],
    algorithms: list[Variant],
    problems: Problems,
) -> None:
    """Reference numbers, claims and figures must name this experiment's ids and metrics."""
    dataset_ids = {v.id for v in datasets}
    algorithm_ids = {v.id for v in algorithms}

    def check(where: tuple[Any, ...], value: str, valid: set[str], what: str) -> None:
        if value not in valid:
            problems.add(where, f"unknown {what} {value!r}; this experiment has: "
                         f"{', '.join(sorted(valid))}")

    if exp.reference is not None:
        for j, ref in enumerate(exp.reference.values):
            here = loc + ("reference", "values", j)
            check(here + ("dataset",), ref.dataset, dataset_ids, "dataset")
            check(here + ("algorithm",), ref.algorithm, algorithm_ids, "algorithm")
            check(here + ("metric",), ref.metric, set(metrics), "metric")
        for j, claim in enumerate(exp.reference.claims):
            here = loc + ("reference", "claims", j)
            check(here + ("better",), claim.better, algorithm_ids, "algorithm")
            check(here + ("than",), claim.than, algorithm_ids, "algorithm")
            check(here + ("metric",), claim.metric, set(metrics), "metric")
    for j, figure in enumerate(exp.figures):
        check(loc + ("figures", j, "metric"), figure.metric, set(metrics), "metric")
        if isinstance(figure, PhaseFigure):
            here = loc + ("figures", j)
            check(here + ("algorithm",), figure.algorithm, algorithm_ids, "algorithm")
            check(here + ("reference",), figure.reference, algorithm_ids, "algorithm")
            axes = {name for v in datasets for name in v.params} | set(INIT_AXES)
            check(here + ("x",), figure.x, axes, "axis (a dataset parameter or init.*)")
            check(here + ("y",), figure.y, axes, "axis (a dataset parameter or init.*)")


def check_phase_experiments(experiments: list[Experiment], prefix: tuple[Any, ...],
                            problems: Problems) -> None:
    """The ``experiments`` a phase diagram gathers must be experiments of the suite."""
    names = {exp.name for exp in experiments}
    for i, exp in enumerate(experiments):
        for j, figure in enumerate(exp.figures):
            for m, name in enumerate(getattr(figure, "experiments", [])):
                if name not in names:
                    where = prefix + (i,) if prefix else ()
                    problems.add(where + ("figures", j, "experiments", m),
                                 f"unknown experiment {name!r}; this suite has: "
                                 f"{', '.join(sorted(names))}")
