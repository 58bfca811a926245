"""Suite files: YAML parsed into strict pydantic models, then checked against the plugins.

A suite is either one experiment (``datasets`` and ``algorithms`` at the top level) or a list
of named ``experiments``; settings given at the top level (budget, metrics, init, ...) are
defaults that each experiment may override. Every mistake is reported with its YAML path
(and line), before anything runs.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from . import plugins
from .errors import PluginError, SuiteError
from .model import InitSpec

GridValues = Annotated[list[Any], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Strict):
    """Per-cell budget: the runner stops an algorithm when either is reached."""

    max_iter: int = Field(100, ge=0, description="iterations after the initial point")
    timeout: float | None = Field(
        300.0, gt=0, description="seconds of algorithm time (metrics excluded)"
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
    label: str | None = Field(None, description="id on leaderboards (default: name + grid)")
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
    pass


class Leaderboard(_Strict):
    rank_by: str = Field(description="metric the leaderboard ranks by")


class Quick(_Strict):
    """Overrides applied by ``moebench run --quick`` (a fast smoke run of a big suite)."""

    repetitions: int | None = Field(None, ge=1)
    budget: Budget | None = None


class ReferenceValue(_Strict):
    """A number a paper reports, to be set beside moebench's measurement."""

    dataset: str = Field(description="dataset variant id, as on the leaderboard")
    algorithm: str = Field(description="algorithm variant id")
    metric: str
    mean: float
    std: float | None = None
    iteration: int | None = Field(None, ge=0, description="at this iteration (default: final)")


class Claim(_Strict):
    """A qualitative claim of a paper: ``better`` beats ``than`` on ``metric``."""

    text: str
    better: str = Field(description="algorithm variant id that should win")
    than: str = Field(description="algorithm variant id that should lose")
    metric: str
    iteration: int | None = Field(None, ge=0, description="compare at this iteration "
                                  "(default: final values)")


class Reference(_Strict):
    """What the source paper reports for an experiment."""

    source: str = Field(description="e.g. 'Makkuva et al. 2019, Table 1'")
    note: str = ""
    values: list[ReferenceValue] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)


class Figure(_Strict):
    """A convergence plot: a metric against iterations, mean and spread over seeds."""

    metric: str
    title: str | None = None
    log_y: bool = False


class _Settings(_Strict):
    quick: Quick | None = None
    repetitions: int | None = Field(None, ge=1)
    budget: Budget | None = None
    init: InitSpec | None = None
    metrics: list[str] | None = Field(None, min_length=1)
    leaderboard: Leaderboard | None = None


class Experiment(_Settings):
    name: str
    description: str = ""
    reference: Reference | None = None
    figures: list[Figure] = Field(default_factory=list)
    datasets: list[DatasetEntry] = Field(min_length=1)
    algorithms: list[AlgorithmEntry] = Field(min_length=1)


class Suite(_Settings):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float64"] | None = None
    datasets: list[DatasetEntry] | None = Field(None, min_length=1)
    algorithms: list[AlgorithmEntry] | None = Field(None, min_length=1)
    experiments: list[Experiment] | None = Field(None, min_length=1)
    _lines: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _one_form(self) -> Suite:
        single = self.datasets is not None or self.algorithms is not None
        if single and self.experiments is not None:
            raise ValueError("give either datasets+algorithms or experiments, not both")
        if not single and self.experiments is None:
            raise ValueError("a suite needs datasets and algorithms, or experiments")
        if single and (self.datasets is None or self.algorithms is None):
            missing = "datasets" if self.datasets is None else "algorithms"
            raise ValueError(f"{missing} is missing")
        return self


# --------------------------------------------------------------------------------------------
# Resolved form: what the runner executes.


@dataclass(frozen=True)
class Variant:
    """One point of a component's grid."""

    id: str
    name: str
    params: dict[str, Any]
    model: ModelChoice | None = None


@dataclass(frozen=True)
class ResolvedExperiment:
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


DEFAULT_METRICS = ["param_error", "train_nll", "test_nll", "test_mse"]


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _yaml_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map every YAML path to its 1-based line, for error messages."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
                lines[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                walk(value, path + (i,))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


class _Problems:
    def __init__(self, source: str, lines: dict[tuple[Any, ...], int]):
        self.source, self.lines, self.items = source, lines, []

    def add(self, loc: tuple[Any, ...], message: str) -> None:
        where = _format_loc(loc)
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                where += f" (line {self.lines[loc[:cut]]})"
                break
        self.items.append((where, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise SuiteError(self.items, self.source)


def parse_suite(text: str, source: str = "<suite>") -> Suite:
    """Parse YAML text into a :class:`Suite` (structure and types only)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(parse)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError([(where, f"malformed YAML: {problem}")], source) from None
    if not isinstance(raw, dict):
        raise SuiteError([("(top level)", "a suite must be a YAML mapping")], source)
    lines = _yaml_lines(text)
    problems = _Problems(source, lines)
    try:
        suite = Suite.model_validate(raw)
        suite._lines = lines
        return suite
    except ValidationError as exc:
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check its spelling)"
            elif err["type"] == "missing":
                msg = "required field is missing"
            problems.add(tuple(err["loc"]), msg)
        problems.raise_if_any()
        raise


def load_suite(path: str | Path) -> Suite:
    """Read and parse a suite file; the error says which file is missing."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError([("(file)", f"no such suite file: {path}")], str(path))
    return parse_suite(path.read_text(), str(path))


def _variant_id(entry: Component, point: dict[str, Any]) -> str:
    if entry.label and not point:
        return entry.label
    base = entry.label or entry.name
    if not point:
        return base
    inner = ",".join(f"{k}={_short(v)}" for k, v in point.items())
    return f"{base}[{inner}]"


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _check_model_choice(choice: ModelChoice, loc: tuple[Any, ...], problems: _Problems) -> None:
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
    first: ValidationError | None = None
    for cls in families.values():
        try:
            cls.Params.model_validate(choice.params)
            return
        except ValidationError as exc:
            first = first or exc
    if first is None:
        return
    for err in first.errors():
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = ("unknown parameter of model " + (repr(choice.name) if choice.name else
                   "families " + ", ".join(families)))
        problems.add(loc + ("params",) + tuple(err["loc"]), msg)


def _expand(
    entry: Component, kind: str, loc: tuple[Any, ...], problems: _Problems, quick: bool = False
) -> list[Variant]:
    if isinstance(entry, DatasetEntry) and entry.model is not None:
        _check_model_choice(entry.model, loc + ("model",), problems)
    try:
        cls = plugins.get(kind, entry.name)
    except PluginError as exc:
        problems.add(loc + ("name",), str(exc))
        return []
    keys = list(entry.grid)
    variants = []
    for values in itertools.product(*(entry.grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        merged = {**entry.params, **point}
        if quick:
            merged.update(entry.quick)
        try:
            cls.Params.model_validate(merged)
        except ValidationError as exc:
            for err in exc.errors():
                field = err["loc"][0] if err["loc"] else None
                if quick and field in entry.quick:
                    where = loc + ("quick", field)
                elif field in point:
                    where = loc + ("grid", field, entry.grid[field].index(point[field]))
                else:
                    where = loc + ("params",) + tuple(err["loc"])
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    valid = ", ".join(cls.Params.model_fields) or "(none)"
                    msg = f"unknown parameter of {kind[:-1]} {entry.name!r}; valid: {valid}"
                problems.add(where, msg)
            continue
        model = entry.model if isinstance(entry, DatasetEntry) else None
        variants.append(Variant(_variant_id(entry, point), entry.name, merged, model))
    return variants


def _check_reference(
    exp: Experiment,
    loc: tuple[Any, ...],
    metrics: list[str],
    datasets: list[Variant],
    algorithms: list[Variant],
    problems: _Problems,
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


def resolve(
    suite: Suite, source: str = "<suite>", quick: bool = False, seeds: int | None = None
) -> list[ResolvedExperiment]:
    """Check a parsed suite against the registered plugins and expand every grid.

    With ``quick``, the suite's and experiments' ``quick`` settings and the components'
    ``quick`` parameters replace the normal ones; ``seeds`` (the CLI's ``--seeds``) replaces
    every experiment's number of repetitions.

    Raises
    ------
    SuiteError
        Listing every unknown plugin (with the valid names), invalid plugin parameter,
        unknown metric or device, and duplicate id, each with its YAML path.
    """
    problems = _Problems(source, suite._lines)
    try:
        plugins.get("devices", suite.device)
    except PluginError as exc:
        problems.add(("device",), str(exc))

    if suite.experiments is None:
        raw = [Experiment(name=suite.name, datasets=suite.datasets, algorithms=suite.algorithms)]
        prefix: tuple[Any, ...] = ()
    else:
        raw, prefix = suite.experiments, ("experiments",)

    resolved, seen_names = [], set()
    metric_names = plugins.components("metrics")
    for i, exp in enumerate(raw):
        loc = prefix + (i,) if prefix else ()
        if exp.name in seen_names:
            problems.add(loc + ("name",), f"duplicate experiment name {exp.name!r}")
        seen_names.add(exp.name)
        metrics = exp.metrics or suite.metrics or DEFAULT_METRICS
        metrics_loc = loc + ("metrics",) if exp.metrics else ("metrics",)
        for j, m in enumerate(metrics):
            if m not in metric_names:
                problems.add(
                    metrics_loc + (j,),
                    f"unknown metric {m!r}; valid names: {', '.join(metric_names)}",
                )
        board = exp.leaderboard or suite.leaderboard
        rank_by = board.rank_by if board else metrics[0]
        if rank_by not in metrics:
            problems.add(
                loc + ("leaderboard", "rank_by") if exp.leaderboard else ("leaderboard", "rank_by"),
                f"{rank_by!r} is not one of this experiment's metrics ({', '.join(metrics)})",
            )
        datasets, algorithms = [], []
        for j, entry in enumerate(exp.datasets):
            datasets += _expand(entry, "datasets", loc + ("datasets",) + (j,), problems, quick)
        for j, entry in enumerate(exp.algorithms):
            algorithms += _expand(entry, "algorithms", loc + ("algorithms",) + (j,), problems,
                                  quick)
        for what, variants in (("datasets", datasets), ("algorithms", algorithms)):
            ids = [v.id for v in variants]
            for dup in sorted({x for x in ids if ids.count(x) > 1}):
                problems.add(
                    loc + (what,), f"two entries have the id {dup!r}; give them distinct labels"
                )
        _check_reference(exp, loc, metrics, datasets, algorithms, problems)
        fast = (exp.quick or suite.quick or Quick()) if quick else Quick()
        resolved.append(
            ResolvedExperiment(
                name=exp.name,
                description=exp.description or suite.description,
                repetitions=(seeds or fast.repetitions or exp.repetitions or suite.repetitions
                             or 1),
                budget=fast.budget or exp.budget or suite.budget or Budget(),
                init=exp.init or suite.init or InitSpec(),
                metrics=list(metrics),
                rank_by=rank_by,
                datasets=datasets,
                algorithms=algorithms,
                reference=exp.reference,
                figures=tuple(exp.figures),
            )
        )
    problems.raise_if_any()
    return resolved
