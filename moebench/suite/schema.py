"""The suite's schema: strict pydantic models of every key a suite file may hold.

A suite is either one experiment (``datasets`` and ``algorithms`` at the top level) or a list
of named ``experiments``; settings given at the top level (budget, metrics, init, ...) are
defaults that each experiment may override. Unknown keys and wrong types are refused
(:func:`moebench.suite.parse_suite` reports each with its YAML path and line); types are strict:
a quoted number is a string, not a number (an integer is a float, a whole float an integer).
"""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..model import InitSpec
from ..params import whole_floats_as_ints
from .labels import Label, Text
from .sizes import parse_size

GridValues = Annotated[list[Any], Field(min_length=1)]

#: Upper bound of ``repetitions`` (and of ``quick.repetitions``).
MAX_REPETITIONS = 1_000_000
#: Upper bound of ``budget.max_iter`` (and of the iterations references and claims name).
#: Every iteration is a row of the results, its metrics kept in memory until the cell ends, so
#: no cell gets near 10^9 iterations: a bigger number is a typo (``1e30``), not a budget.
MAX_ITER = 10**9

_SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SUITE_NAME_LENGTH = 100


class _Strict(BaseModel):
    # strict types: max_iter: '3' or timeout: '5' (a string) is refused, not read as a number
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        # max_iter: 1e4 is 10000, and max_iter: 1e30 beyond the bound rather than a non-integer
        return whole_floats_as_ints(cls, data)


class Budget(_Strict):
    """Per-cell budget: a cell stops its algorithm when either is reached."""

    max_iter: int = Field(
        100, ge=0, le=MAX_ITER, description="iterations after the initial point, at most "
        "10^9: every iteration is a row of the results (its metrics kept in memory until the "
        "cell ends), so a bigger number is a typo, not a budget"
    )
    timeout: float | None = Field(
        300.0, gt=0, description="seconds of algorithm time (metrics excluded)"
    )
    clock: Literal["cpu", "wall"] | None = Field(
        None, description="the clock timeout counts: 'cpu' (CPU time of the algorithm's "
        "thread; the same iterations whatever the machine's load) or 'wall'; default: cpu on "
        "CPU devices, wall elsewhere"
    )
    wall_timeout: float | None = Field(
        None, gt=0, description="hard wall-clock limit per cell in seconds: the worker of a "
        "cell still running then is killed (default: 3 x timeout + 120 s; none without a "
        "timeout)"
    )


class ModelChoice(_Strict):
    """Overrides the model family a dataset proposes (``name``) or its hyper-parameters."""

    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class Component(_Strict):
    """A plugin by name with fixed ``params`` and a ``grid`` of values to sweep.

    ``quick`` holds parameter values that replace ``params`` and grid values under
    ``moebench run --quick`` (smaller ``n``, say).
    """

    name: str
    label: Label | None = Field(None, description="id on leaderboards (default: name + grid)")
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, GridValues] = Field(default_factory=dict)
    quick: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _grid_and_params_disjoint(self) -> Component:
        both = sorted(set(self.params) & set(self.grid))
        if both:
            raise ValueError(f"{', '.join(both)} given both in params and in grid")
        return self


class DatasetEntry(Component):
    model: ModelChoice | None = None


class AlgorithmEntry(Component):
    """An algorithm with its parameters and, optionally, its own ``budget``.

    ``budget`` overrides the experiment's budget for this algorithm's cells, field by field (a
    restart method may get ``{max_iter: 500}`` and keep the experiment's ``timeout``). It does not
    change any seed: the data, the initial point and the algorithm's generator are the same as
    without it. Under ``--quick`` a ``quick.budget`` of the experiment or suite still applies to
    every algorithm.
    """

    budget: Budget | None = Field(
        None, description="this algorithm's budget: its fields override the experiment's"
    )
    reference: bool = Field(
        False, description="a reference, not a competitor (e.g. mle-from-truth, an oracle that "
        "reads the ground truth): on the leaderboards below the ranked algorithms, without a "
        "rank, and never the best"
    )


class Leaderboard(_Strict):
    rank_by: str = Field(description="metric the leaderboard ranks by")


class Quick(_Strict):
    """Overrides applied by ``moebench run --quick`` (a fast smoke run of a big suite)."""

    repetitions: int | None = Field(None, ge=1, le=MAX_REPETITIONS)
    budget: Budget | None = None


class ReferenceValue(_Strict):
    """A number a paper reports, to be set beside moebench's measurement."""

    dataset: str = Field(description="dataset variant id, as on the leaderboard")
    algorithm: str = Field(description="algorithm variant id")
    metric: str
    mean: float
    std: float | None = None
    iteration: int | None = Field(None, ge=0, le=MAX_ITER,
                                  description="at this iteration (default: final)")


class Claim(_Strict):
    """A qualitative claim of a paper: ``better`` beats ``than`` on ``metric``."""

    text: Label
    better: str = Field(description="algorithm variant id that should win")
    than: str = Field(description="algorithm variant id that should lose")
    metric: str
    iteration: int | None = Field(None, ge=0, le=MAX_ITER, description="compare at this "
                                  "iteration (default: final values)")


class Reference(_Strict):
    """What the source paper reports for an experiment."""

    source: Label = Field(description="e.g. 'Makkuva et al. 2019, Table 1'")
    note: Text = ""
    values: list[ReferenceValue] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)


class Figure(_Strict):
    """A convergence plot: a metric against iterations, mean and spread over seeds."""

    kind: Literal["convergence"] = Field("convergence", description="a convergence plot "
                                         "(the default kind of a figure)")
    metric: str
    title: Label | None = None
    log_y: bool = False


#: The parameters of an experiment's initialisation that a phase diagram can have as an axis.
INIT_AXES = ("init.scale", "init.radius")


class PhaseFigure(_Strict):
    """A phase diagram: per setting, the fraction of seeds where ``algorithm`` reached the
    optimum that ``reference`` found on the same data (its final ``metric`` at most the
    reference's plus ``tolerance`` times ``max(1, |reference|)``)."""

    kind: Literal["phase"] = Field(description="a phase diagram")
    x: str = Field(description="x axis: a dataset parameter (`k`, `n`, ...) or an "
                   "initialisation parameter (`init.scale`, `init.radius`)")
    y: str = Field(description="y axis, like `x`")
    algorithm: str = Field(description="algorithm variant id whose seeds are judged")
    reference: str = Field(description="algorithm variant id that gives the optimum of each "
                           "seed (e.g. `mle-from-truth`)")
    experiments: list[Label] = Field(
        default_factory=list, description="experiments whose seeds the diagram gathers "
        "(default: this one); for an axis that experiments set, such as `init.scale`")
    metric: str = Field("train_nll", description="the training objective compared")
    tolerance: float = Field(1e-4, ge=0, description="relative tolerance of 'reached'")
    title: Label | None = Field(None, description="plot title")


def _figure_kind(value: Any) -> Any:
    """The figure's ``kind`` (``convergence`` when not given); another value is refused with
    the kinds that exist."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "convergence" if kind is None else kind


#: An experiment's figure: a convergence plot (no ``kind``) or a phase diagram.
FigureSpec = Annotated[
    Annotated[Figure, Tag("convergence")] | Annotated[PhaseFigure, Tag("phase")],
    Discriminator(_figure_kind, custom_error_type="figure_kind",
                  custom_error_message="unknown figure kind: a figure's kind is 'convergence' "
                  "(the default) or 'phase'"),
]


def without_figure_kind(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A validation error's YAML path without the figure kind pydantic puts after a figure's
    position (``figures, 0, phase, x`` -> ``figures, 0, x``): the path in the file."""
    return tuple(part for i, part in enumerate(loc)
                 if not (i >= 2 and loc[i - 2] == "figures" and isinstance(loc[i - 1], int)
                         and part in ("convergence", "phase")))


class _Settings(_Strict):
    quick: Quick | None = None
    repetitions: int | None = Field(None, ge=1, le=MAX_REPETITIONS)
    budget: Budget | None = None
    init: InitSpec | None = None
    metrics: list[str] | None = Field(None, min_length=1)
    leaderboard: Leaderboard | None = None


class Experiment(_Settings):
    name: Label
    description: Text = ""
    reference: Reference | None = None
    figures: list[FigureSpec] = Field(default_factory=list)
    datasets: list[DatasetEntry] = Field(min_length=1)
    algorithms: list[AlgorithmEntry] = Field(min_length=1)


#: Top-level suite keys with this prefix are ignored: a place for shared YAML anchors.
EXTENSION_PREFIX = "x-"


class Suite(_Settings):
    name: str = Field(description="names the results folder <out>/<name>/")
    description: Text = ""
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float64"] | None = None
    datasets: list[DatasetEntry] | None = Field(None, min_length=1)
    algorithms: list[AlgorithmEntry] | None = Field(None, min_length=1)
    experiments: list[Experiment] | None = Field(None, min_length=1)
    memory_limit: int | str | None = Field(
        None, description="address space each cell may add to its worker (bytes, or '4GiB', "
        "'512MB'); a cell allocating more ends 'crashed' (Linux only)"
    )
    _lines: dict = PrivateAttr(default_factory=dict)

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            parse_size(value)
        return value

    def memory_limit_bytes(self) -> int | None:
        """``memory_limit`` in bytes (``None``: unlimited)."""
        return None if self.memory_limit is None else parse_size(self.memory_limit)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        # The name is a folder under the output directory: ".", ".." or "a/b" would escape it.
        if not _SUITE_NAME.fullmatch(value) or len(value) > _SUITE_NAME_LENGTH:
            raise PydanticCustomError(
                "suite_name",
                "a suite name must start with a letter or digit and contain only letters, "
                "digits, '_', '.' and '-' (at most {limit} characters): it names the results "
                "folder",
                {"limit": _SUITE_NAME_LENGTH},
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _extension_keys(cls, data: Any) -> Any:
        # top-level keys starting with "x-" hold YAML anchors that experiments share (as in
        # docker-compose files): not settings
        if isinstance(data, dict):
            return {k: v for k, v in data.items()
                    if not (isinstance(k, str) and k.startswith(EXTENSION_PREFIX))}
        return data

    @model_validator(mode="after")
    def _one_form(self) -> Suite:
        problem = form_problem(self.datasets is not None, self.algorithms is not None,
                               self.experiments is not None)
        if problem:
            raise ValueError(problem)
        return self


def form_problem(datasets: bool, algorithms: bool, experiments: bool) -> str | None:
    """What is wrong with a suite's form, given which of its three lists it has.

    A suite is one experiment (``datasets`` and ``algorithms``) or a list of ``experiments``.
    The loader also asks this of a suite that has other schema errors, where pydantic skips
    :class:`Suite`'s own check, so that one error message lists every mistake.

    Parameters
    ----------
    datasets, algorithms, experiments
        Whether the suite gives each key (a value other than null).

    Returns
    -------
    str | None
        The problem, or ``None`` for a suite of either form.
    """
    single = datasets or algorithms
    if single and experiments:
        return "give either datasets+algorithms or experiments, not both"
    if not single and not experiments:
        return "a suite needs datasets and algorithms, or experiments"
    if single and not (datasets and algorithms):
        return f"{'algorithms' if datasets else 'datasets'} is missing"
    return None



def keys_at(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys a suite may hold at the YAML path ``loc`` (a mapping of the schema).

    Parameters
    ----------
    loc
        The path of a mapping: ``()`` for the top level, ``("experiments", 0, "budget")``
        for an experiment's budget (strings are keys, integers list positions).

    Returns
    -------
    list[str] | None
        The keys of the pydantic model at ``loc``, the settings an experiment shares with the
        suite last (the top level: ``name, description, seed, ..., leaderboard``); ``None``
        where ``loc`` leads to no model (a plugin's ``params``, a path the schema lacks).
    """
    target: Any = Suite
    for part in loc:
        tagged = _union_tags(target)
        if tagged:  # a figure's kind, as pydantic's error path names it
            target = tagged.get(part)
        elif isinstance(target, type) and issubclass(target, BaseModel):
            field = target.model_fields.get(part) if isinstance(part, str) else None
            target = None if field is None else _unwrapped(field.annotation)
        elif typing.get_origin(target) in (list, tuple) and isinstance(part, int):
            target = _unwrapped(typing.get_args(target)[0])
        elif typing.get_origin(target) is dict and isinstance(part, str):
            target = _unwrapped(typing.get_args(target)[1])
        else:
            return None
    kinds = _union_models(target)  # a figure: a convergence plot or a phase diagram
    if kinds:
        return list(dict.fromkeys(n for model in kinds for n in _shared_settings_last(model)))
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        return None
    return _shared_settings_last(target)


def _union_tags(annotation: Any) -> dict[str, type[BaseModel]]:
    """``{tag: model}`` of a tagged union of models (the figure kinds), else ``{}``."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    tags = {}
    for member in typing.get_args(annotation):
        if typing.get_origin(member) is Annotated:
            model, *extra = typing.get_args(member)
            tags.update({t.tag: model for t in extra if isinstance(t, Tag)})
    return tags


def _union_models(annotation: Any) -> list[type[BaseModel]]:
    """The models of a union of models (``Figure | PhaseFigure``), else ``[]``."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    members = [_unwrapped(a) for a in typing.get_args(annotation)]
    if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
        return members
    return []


def _unwrapped(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and ``None``: ``list[Experiment] | None`` ->
    ``list[Experiment]`` (``None`` for a union of several types)."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        others = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(others) == 1:
            return _unwrapped(others[0])
        return annotation if _union_models(annotation) else None
    return annotation


def _shared_settings_last(model: type[BaseModel]) -> list[str]:
    """The fields of ``model`` in their declared order, those it inherits from a private base
    (the settings ``_Settings`` gives the suite and its experiments) last."""
    shared = {n for klass in model.__mro__[1:] if isinstance(klass, type)
              and issubclass(klass, BaseModel) and klass.__name__.startswith("_")
              for n in klass.model_fields}
    names = list(model.model_fields)
    return [n for n in names if n not in shared] + [n for n in names if n in shared]
