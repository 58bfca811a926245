"""Suite files: YAML parsed into strict pydantic models, then checked against the plugins.

A suite is either one experiment (``datasets`` and ``algorithms`` at the top level) or a list
of named ``experiments``; settings given at the top level (budget, metrics, init, ...) are
defaults that each experiment may override. Every mistake is reported with its YAML path
(and line), before anything runs.

Suite files are untrusted input: the YAML loader refuses alias bombs, deep nesting and
duplicate keys, and :func:`resolve` counts the cells of a suite arithmetically before it
expands any grid (see :func:`count_cells`).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from . import plugins
from .errors import PluginError, SuiteError
from .execution.limits import parse_size
from .model import InitSpec

GridValues = Annotated[list[Any], Field(min_length=1)]

#: Suites with more cells than this need ``moebench run --yes``
#: (``resolve(..., max_cells=MAX_CELLS_WITHOUT_CONFIRMATION)``).
MAX_CELLS_WITHOUT_CONFIRMATION = 100_000
#: No suite may have more cells than this, confirmed or not: grids are not expanded beyond it.
MAX_CELLS = 10_000_000
#: Upper bound of ``repetitions`` (and of ``quick.repetitions``).
MAX_REPETITIONS = 1_000_000
#: Limits of the YAML loader: nesting depth, nodes after alias expansion, number of aliases.
MAX_YAML_DEPTH = 50
MAX_YAML_NODES = 100_000
MAX_YAML_ALIASES = 500
#: At most this many problems are listed in one :class:`SuiteError` (then a count of the rest).
MAX_REPORTED_PROBLEMS = 100

_SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SUITE_NAME_LENGTH = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Budget(_Strict):
    """Per-cell budget: the runner stops an algorithm when either is reached."""

    max_iter: int = Field(100, ge=0, description="iterations after the initial point")
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
    repetitions: int | None = Field(None, ge=1, le=MAX_REPETITIONS)
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
    name: str = Field(description="names the results folder <out>/<name>/")
    description: str = ""
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
    #: An algorithm entry's own budget (already merged over the experiment's), else ``None``.
    budget: Budget | None = None


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

    def budget_for(self, algorithm: Variant) -> Budget:
        """The budget of ``algorithm``'s cells: its own (``budget:`` in its entry) or ours."""
        return algorithm.budget if algorithm.budget is not None else self.budget


DEFAULT_METRICS = ["param_error", "train_nll", "test_nll", "test_mse"]


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _Refused(Exception):
    """The YAML loader refused the input (too deep, too big, duplicate key): where, message."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _SuiteLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with limits for untrusted suite files.

    Refuses, with the YAML path, line and column:

    - nesting deeper than :data:`MAX_YAML_DEPTH` (also through aliases);
    - more than :data:`MAX_YAML_ALIASES` aliases, more than :data:`MAX_YAML_NODES` nodes once
      aliases are expanded ("billion laughs"), and an alias inside the node it refers to;
    - a key given twice in one mapping (YAML would silently keep the last value).

    Values that the safe constructor cannot build (a date ``2001-13-45``, an integer of
    thousands of digits) become a ``ConstructorError`` with their position instead of a
    ``ValueError``.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._deepest = 0
        self._nodes = 0
        self._aliases = 0
        self._path: list[Any] = []
        self._sizes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height)
        self._open: set[str] = set()  # anchors whose node is being composed

    def _where(self, mark: yaml.Mark, path: tuple[Any, ...] | None = None) -> str:
        path = tuple(self._path) if path is None else path
        loc = _format_loc(path[:8]) + ("..." if len(path) > 8 else "")
        return f"{loc} (line {mark.line + 1}, column {mark.column + 1})"

    def _count(self, nodes: int, mark: yaml.Mark) -> None:
        self._nodes += nodes
        if self._nodes > MAX_YAML_NODES:
            expanded = " once aliases are expanded" if self._aliases else ""
            raise _Refused(self._where(mark), f"more than {MAX_YAML_NODES:,} YAML values"
                           f"{expanded}; a suite is not that big")

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # ``index`` is a sequence position, the key node of a mapping value, or None (a key or
        # the document root): it extends the YAML path used in messages.
        pushed = index is not None
        if pushed:
            if isinstance(index, yaml.ScalarNode):
                self._path.append(index.value)
            else:
                self._path.append(index if isinstance(index, int) else "?")
        self._depth += 1
        try:
            return self._compose_bounded(parent, index)
        finally:
            self._depth -= 1
            if pushed:
                self._path.pop()

    def _compose_bounded(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        mark = event.start_mark
        if self._depth > MAX_YAML_DEPTH:
            raise _Refused(self._where(mark), f"nested more than {MAX_YAML_DEPTH} levels deep")
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent):
            if anchor in self._open:
                raise _Refused(self._where(mark), f"alias *{anchor} is inside the node it refers "
                               "to (a recursive structure)")
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _Refused(self._where(mark), f"more than {MAX_YAML_ALIASES} aliases (*name)")
            size, height = self._sizes.get(anchor, (1, 0))  # undefined: PyYAML says so below
            self._count(size, mark)
            if self._depth + height > MAX_YAML_DEPTH:
                raise _Refused(self._where(mark), f"alias *{anchor} nests values more than "
                               f"{MAX_YAML_DEPTH} levels deep")
            self._deepest = max(self._deepest, self._depth + height)
            return super().compose_node(parent, index)
        self._count(1, mark)
        start, outer = self._nodes - 1, self._deepest
        self._deepest = self._depth
        if anchor is not None:
            self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open.discard(anchor)
        if anchor is not None:
            self._sizes[anchor] = (self._nodes - start, self._deepest - self._depth)
        self._deepest = max(outer, self._deepest)
        return node

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # "<<" merges may be overridden; complex keys fail in validation
            try:
                key = self.construct_object(key_node)
                hash(key)
            except (yaml.YAMLError, TypeError):
                continue  # construction reports it, with its position
            if key in first:
                mark, line = key_node.start_mark, first[key].start_mark.line + 1
                raise _Refused(
                    self._where(mark, tuple(self._path) + (key,)),
                    f"duplicate key {key!r} (line {mark.line + 1}; first at line {line})",
                )
            first[key] = key_node
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # ValueError of a bad date or of a 5000-digit integer, ...
            text = f" {node.value!r}" if isinstance(node, yaml.ScalarNode) else ""
            if len(text) > 60:
                text = text[:57] + "..."
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value{text}: {exc}", node.start_mark
            ) from None


def _node_lines(root: yaml.Node) -> dict[tuple[Any, ...], int]:
    """Map every YAML path of a composed document to its 1-based line.

    A node reached again through an alias is not walked again (its inner paths keep the lines
    of the anchored original; the alias's own path gets its key's line), so this is linear in
    the size of the file, whatever the aliases expand to.
    """
    lines: dict[tuple[Any, ...], int] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                child = path + (key.value,)
                lines[child] = key.start_mark.line + 1
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                stack.append((value, path + (i,)))
    return lines


def _yaml_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map every YAML path to its 1-based line, for error messages (empty if malformed)."""
    loader = _SuiteLoader(text)
    try:
        root = loader.get_single_node()
    except (yaml.YAMLError, _Refused):
        return {}
    finally:
        loader.dispose()
    return _node_lines(root) if root is not None else {}


def _load_yaml(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The document's data and its path-to-line map, composed once with :class:`_SuiteLoader`."""
    loader = _SuiteLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        lines = _node_lines(root)
        return loader.construct_document(root), lines
    finally:
        loader.dispose()


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text of a suite file, or a SuiteError naming the line and byte of the bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SuiteError(
            [(f"line {line}", f"not UTF-8 text: {exc.reason} (byte 0x{data[exc.start]:02x}) "
              f"at byte {exc.start}; save the file as UTF-8")],
            source,
        ) from None


class _Problems:
    def __init__(self, source: str, lines: dict[tuple[Any, ...], int]):
        self.source, self.lines, self.items = source, lines, []
        self._seen: set[tuple[str, str]] = set()

    def add(self, loc: tuple[Any, ...], message: str) -> None:
        where = _format_loc(loc)
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                where += f" (line {self.lines[loc[:cut]]})"
                break
        if (where, message) not in self._seen:  # a bad grid value fails in every grid point
            self._seen.add((where, message))
            self.items.append((where, message))

    def raise_if_any(self) -> None:
        if self.items:
            items = self.items[:MAX_REPORTED_PROBLEMS]
            if len(self.items) > MAX_REPORTED_PROBLEMS:
                items.append(("...", f"{len(self.items) - MAX_REPORTED_PROBLEMS} more problems "
                              "not shown"))
            raise SuiteError(items, self.source)


def parse_suite(text: str | bytes, source: str = "<suite>") -> Suite:
    """Parse YAML text into a :class:`Suite` (structure and types only).

    Parameters
    ----------
    text
        The suite's YAML, as text or as UTF-8 bytes.
    source
        File name used in error messages.

    Returns
    -------
    Suite
        The validated suite; plugin names and parameters are checked by :func:`resolve`.

    Raises
    ------
    SuiteError
        For bytes that are not UTF-8, malformed YAML, YAML beyond the loader's limits (nesting,
        aliases, size), duplicate keys, unknown keys and wrong types, each with its YAML path
        and line.
    """
    if isinstance(text, bytes):
        text = _decode(text, source)
    try:
        raw, lines = _load_yaml(text)
    except _Refused as exc:
        raise SuiteError([(exc.where, exc.message)], source) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, a position
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        problem = str(exc).split("\n")[0]
        raise SuiteError([(f"line {line}, column {column}", f"malformed YAML: {problem}")],
                         source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(parse)"
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and getattr(exc, "problem", None):
            problem = f"{context}, {problem}"
        raise SuiteError([(where, f"malformed YAML: {problem}")], source) from None
    if not isinstance(raw, dict):
        what = "an empty document" if raw is None else f"a {type(raw).__name__}"
        raise SuiteError([(f"(top level) (line {lines.get((), 1)})",
                           f"a suite must be a YAML mapping (name: ..., ...), not {what}")],
                         source)
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
    """Read and parse a suite file; the error says which file is missing or unreadable.

    Parameters
    ----------
    path
        The suite file (UTF-8 YAML).

    Returns
    -------
    Suite
        As :func:`parse_suite` returns it.

    Raises
    ------
    SuiteError
        If the file is missing, unreadable, not UTF-8 or not a valid suite.
    """
    path = Path(path)
    if not path.is_file():
        raise SuiteError([("(file)", f"no such suite file: {path}")], str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError([("(file)", f"cannot read {path}: {exc.strerror or exc}")],
                         str(path)) from None
    return parse_suite(data, str(path))


def _variant_id(entry: Component, point: dict[str, Any]) -> str:
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


def _validate_params(cls: type, params: dict[str, Any]) -> Exception | None:
    """Validate plugin parameters; the error (any exception a plugin's validator raises)."""
    try:
        cls.Params.model_validate(params)
    except ValidationError as exc:
        return exc
    except Exception as exc:  # a plugin validator that fails on odd values (OverflowError, ...)
        return exc
    return None


def _plugin_failure(exc: Exception) -> str:
    return f"the plugin's parameter check failed on these values: {type(exc).__name__}: {exc}"


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
    first: Exception | None = None
    for cls in families.values():
        exc = _validate_params(cls, choice.params)
        if exc is None:
            return
        first = first or exc
    if first is None:
        return
    if not isinstance(first, ValidationError):
        problems.add(loc + ("params",), _plugin_failure(first))
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
    for indices in itertools.product(*(range(len(entry.grid[k])) for k in keys)):
        point = {k: entry.grid[k][i] for k, i in zip(keys, indices, strict=True)}
        position = dict(zip(keys, indices, strict=True))
        merged = {**entry.params, **point}
        if quick:
            merged.update(entry.quick)
        exc = _validate_params(cls, merged)
        if exc is not None and not isinstance(exc, ValidationError):
            problems.add(loc + ("params",), _plugin_failure(exc))
            continue
        if exc is not None:
            for err in exc.errors():
                field = err["loc"][0] if err["loc"] else None
                if quick and field in entry.quick:
                    where = loc + ("quick", field)
                elif field in point:
                    where = loc + ("grid", field, position[field])
                else:
                    where = loc + ("params",) + tuple(err["loc"])
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    valid = ", ".join(cls.Params.model_fields) or "(none)"
                    msg = f"unknown parameter of {kind[:-1]} {entry.name!r}; valid: {valid}"
                problems.add(where, msg)
            continue
        model = entry.model if isinstance(entry, DatasetEntry) else None
        own = entry.budget if isinstance(entry, AlgorithmEntry) else None
        variants.append(Variant(_variant_id(entry, point), entry.name, merged, model, own))
    return variants


def _with_budget(variant: Variant, base: Budget, own: bool = True) -> Variant:
    """``variant`` with its own budget (the fields its entry sets) merged over ``base``
    (``own=False``: without a budget of its own)."""
    if variant.budget is None:
        return variant
    if not own:
        return Variant(variant.id, variant.name, variant.params, variant.model)
    own = {k: getattr(variant.budget, k) for k in variant.budget.model_fields_set}
    merged = Budget.model_validate({**base.model_dump(), **own})
    return Variant(variant.id, variant.name, variant.params, variant.model, merged)


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


def _experiments(suite: Suite) -> tuple[list[Experiment], tuple[Any, ...]]:
    """The suite's experiments (one, named after the suite, in the single form) and path."""
    if suite.experiments is None:
        one = Experiment.model_construct(
            name=suite.name, datasets=suite.datasets, algorithms=suite.algorithms
        )
        return [one], ()
    return list(suite.experiments), ("experiments",)


def _fast(suite: Suite, exp: Experiment, quick: bool) -> Quick:
    return (exp.quick or suite.quick or Quick()) if quick else Quick()


def _repetitions(suite: Suite, exp: Experiment, quick: bool, seeds: int | None) -> int:
    fast = _fast(suite, exp, quick)
    return seeds or fast.repetitions or exp.repetitions or suite.repetitions or 1


def _grid_size(entry: Component) -> int:
    return math.prod(len(values) for values in entry.grid.values())


def _cell_counts(
    suite: Suite, quick: bool, seeds: int | None
) -> list[tuple[tuple[Any, ...], int, int, int]]:
    """Per experiment: its path, dataset variants, algorithm variants and repetitions."""
    raw, prefix = _experiments(suite)
    return [
        (
            prefix + (i,) if prefix else (),
            sum(_grid_size(entry) for entry in exp.datasets),
            sum(_grid_size(entry) for entry in exp.algorithms),
            _repetitions(suite, exp, quick, seeds),
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
        As for :func:`resolve` (``quick`` may change the repetitions, ``seeds`` replaces them).

    Returns
    -------
    int
        The number of cells :func:`resolve` followed by a run would execute (before any
        variant is rejected as invalid).
    """
    return sum(d * a * r for _, d, a, r in _cell_counts(suite, quick, seeds))


def _check_size(
    suite: Suite, quick: bool, seeds: int | None, max_cells: int | None, problems: _Problems
) -> None:
    """Refuse a suite with too many cells before any grid is expanded."""
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
    problems = _Problems(source, suite._lines)
    _check_size(suite, quick, seeds, max_cells, problems)
    try:
        plugins.get("devices", suite.device)
    except PluginError as exc:
        problems.add(("device",), str(exc))

    raw, prefix = _experiments(suite)
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
            counts = Counter(v.id for v in variants)
            for dup in sorted(x for x, n in counts.items() if n > 1):
                problems.add(
                    loc + (what,), f"two entries have the id {dup!r}; give them distinct labels"
                )
        _check_reference(exp, loc, metrics, datasets, algorithms, problems)
        fast = _fast(suite, exp, quick)
        budget = fast.budget or exp.budget or suite.budget or Budget()
        # an entry's own budget is merged over the experiment's; a quick budget replaces both
        algorithms = [_with_budget(v, budget, own=not fast.budget) for v in algorithms]
        resolved.append(
            ResolvedExperiment(
                name=exp.name,
                description=exp.description or suite.description,
                repetitions=_repetitions(suite, exp, quick, seeds),
                budget=budget,
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
