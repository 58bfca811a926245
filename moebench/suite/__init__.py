"""Suite files: YAML parsed into strict pydantic models, then checked against the plugins.

A suite is either one experiment (``datasets`` and ``algorithms`` at the top level) or a list
of named ``experiments``; settings given at the top level (budget, metrics, init, ...) are
defaults that each experiment may override. Every mistake is reported with its YAML path
(and line), before anything runs. Suite files are untrusted input: the YAML loader refuses
alias bombs, deep nesting and duplicate keys, and :func:`resolve` counts the cells of a suite
arithmetically before it expands any grid (see :func:`count_cells`).

Modules, each importing only modules listed above it (and nothing from the cells, the
execution, the runner, the reports or the CLI):

- ``sizes``: memory sizes (``parse_size``, ``format_size``);
- ``labels``: the text a suite shows (``Label``, ``Text``): no control or format characters;
- ``schema``: the strict pydantic models of a suite file (``Suite``, ``Experiment``, ...);
- ``problems``: mistakes gathered with their YAML path and line into one ``SuiteError``;
- ``bounded_yaml``: the YAML loader with limits for untrusted files;
- ``loader``: ``load_suite`` and ``parse_suite`` (bytes -> YAML -> schema);
- ``resolved``: what the runner executes (``ResolvedExperiment``, ``Variant``, ``variant_id``);
- ``counting``: ``count_cells`` and the size check, before any grid is expanded;
- ``checks``: checks against the registered plugins, ids and references;
- ``resolution``: ``resolve``, which expands every grid into variants;
- ``selection``: the command line's ``-e``/``-a``/``-d`` selection of part of a suite;
- ``schema_doc``: the docs site's table of suite keys, generated from the schema
  (``python -m moebench.suite.schema_doc --write docs/suite-reference.md``; not imported here).
"""

from .bounded_yaml import MAX_YAML_ALIASES, MAX_YAML_DEPTH, MAX_YAML_NODES, yaml_lines
from .counting import MAX_CELLS, MAX_CELLS_WITHOUT_CONFIRMATION, count_cells
from .loader import load_suite, parse_suite
from .problems import MAX_REPORTED_PROBLEMS
from .resolution import DEFAULT_METRICS, resolve
from .resolved import ResolvedExperiment, Variant, variant_id
from .schema import (
    MAX_ITER,
    MAX_REPETITIONS,
    AlgorithmEntry,
    Budget,
    Claim,
    Component,
    DatasetEntry,
    Experiment,
    Figure,
    Leaderboard,
    ModelChoice,
    Quick,
    Reference,
    ReferenceValue,
    Suite,
)
from .selection import SelectionError, grid_summary, parse_selector, select, with_suggestions
from .sizes import format_size, parse_size

__all__ = [
    "DEFAULT_METRICS",
    "MAX_CELLS",
    "MAX_CELLS_WITHOUT_CONFIRMATION",
    "MAX_ITER",
    "MAX_REPETITIONS",
    "MAX_REPORTED_PROBLEMS",
    "MAX_YAML_ALIASES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "AlgorithmEntry",
    "Budget",
    "Claim",
    "Component",
    "DatasetEntry",
    "Experiment",
    "Figure",
    "Leaderboard",
    "ModelChoice",
    "Quick",
    "Reference",
    "ReferenceValue",
    "ResolvedExperiment",
    "SelectionError",
    "Suite",
    "Variant",
    "count_cells",
    "format_size",
    "grid_summary",
    "load_suite",
    "parse_selector",
    "parse_size",
    "parse_suite",
    "resolve",
    "select",
    "variant_id",
    "with_suggestions",
    "yaml_lines",
]
