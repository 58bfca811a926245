"""The suite-key reference of the docs site, generated from the pydantic models of the schema.

The docs site regenerates the block between ``<!-- suite-keys:start -->`` and
``<!-- suite-keys:end -->`` of ``docs/suite-reference.md`` on every build (``docs/hooks.py``);
``python -m moebench.suite.schema_doc --write docs/suite-reference.md`` refreshes the copy checked
in for GitHub readers, and ``tests/suite/test_schema_doc.py`` fails when it drifts from the models.
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .schema import EXTENSION_PREFIX, Suite

START, END = "<!-- suite-keys:start -->", "<!-- suite-keys:end -->"

#: Said under the top-level keys: the keys the schema ignores there.
EXTENSION_KEYS = (
    f"Top-level keys starting with `{EXTENSION_PREFIX}` are ignored: a home for the YAML "
    "anchors that experiments share ([Sharing settings with YAML anchors]"
    "(suites.md#sharing-settings-with-yaml-anchors))."
)

#: What a field means where its model gives no description.
NOTES = {
    ("Suite", "seed"): "seed everything random derives from (SHA-256 of seed and cell ids)",
    ("Suite", "device"): "device plugin (`moebench list devices`); `--device` overrides",
    ("Suite", "dtype"): "floating-point type; default: the device's (float64 on the CPU)",
    ("Suite", "description"): "free text, shown in the reports",
    ("Suite", "datasets"): "single-experiment form: the datasets (with `algorithms`)",
    ("Suite", "algorithms"): "single-experiment form: the algorithms (with `datasets`)",
    ("Suite", "experiments"): "named experiments, each with its own datasets and algorithms; "
                              "top-level settings are their defaults",
    ("_Settings", "quick"): "overrides under `moebench run --quick` (a smoke run)",
    ("_Settings", "repetitions"): "seeds per cell, 1 to 10^6 (`--seeds` overrides)",
    ("_Settings", "budget"): "per-cell budget (a whole block replaces the one above it)",
    ("_Settings", "init"): "initialisation of every algorithm (the same for all)",
    ("_Settings", "metrics"): "metric plugins evaluated every iteration "
                              "(default: param_error, train_nll, test_nll, test_mse)",
    ("_Settings", "leaderboard"): "`{rank_by: METRIC}`: the metric leaderboards rank by "
                                  "(default: the first metric)",
    ("Experiment", "name"): "names the experiment in tables, reports and `-e`",
    ("Experiment", "description"): "free text, shown in the reports",
    ("Experiment", "reference"): "the source paper's numbers and claims (verdicts in "
                                 "REPRODUCTION.md and report.html)",
    ("Experiment", "figures"): "convergence plots to draw (report.html draws the ranking "
                               "metric when none is given), and phase diagrams "
                               "(`kind: phase`)",
    ("Experiment", "datasets"): "dataset entries",
    ("Experiment", "algorithms"): "algorithm entries",
    ("Component", "name"): "plugin name (`moebench list algorithms|datasets`)",
    ("Component", "params"): "fixed parameters of the plugin",
    ("Component", "grid"): "swept parameters: one variant per combination (cartesian product)",
    ("Component", "quick"): "parameter values used instead under `--quick`",
    ("DatasetEntry", "model"): "override the model family the dataset proposes, or its "
                               "parameters",
    ("ModelChoice", "name"): "model plugin (`moebench list models`)",
    ("ModelChoice", "params"): "model parameters (e.g. `k`, `noise`)",
    ("Figure", "metric"): "metric to plot against iteration and algorithm time",
    ("Figure", "title"): "plot title",
    ("Figure", "log_y"): "log y axis (report.html also uses one when values span > 3 decades)",
    ("Reference", "note"): "free text, e.g. why a value is not reproduced",
    ("Reference", "values"): "numbers the paper reports",
    ("Reference", "claims"): "qualitative claims to check",
    ("ReferenceValue", "metric"): "metric of the experiment",
    ("ReferenceValue", "mean"): "the paper's value",
    ("ReferenceValue", "std"): "the paper's standard deviation (its interval is mean ± std; "
                               "± 5 % of the mean when absent)",
    ("Claim", "text"): "the claim, as the paper states it",
    ("Claim", "metric"): "metric the claim is about",
    ("Quick", "repetitions"): "seeds per cell under `--quick`, 1 to 10^6",
    ("Quick", "budget"): "budget under `--quick`",
    ("InitSpec", "scheme"): "`random` (Gaussian entries), `unit-rows`, or `near-truth` "
                            "(needs ground truth)",
}


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (list, tuple):
        return f"list[{_type(args[0])}]" if args else "list"
    if origin is dict:
        return f"dict[{_type(args[0])}, {_type(args[1])}]" if args else "dict"
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _models(annotation: Any) -> list[type[BaseModel]]:
    found = []
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        found += _models(arg)
    return found


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is None or value is PydanticUndefined:
        return "-"
    if value in ({}, [], ""):
        return "empty"
    return f"`{value}`"


def _note(model: type[BaseModel], name: str, field: Any) -> str:
    if field.description:
        return field.description
    for cls in model.__mro__:
        if (cls.__name__, name) in NOTES:
            return NOTES[(cls.__name__, name)]
    return ""


def _doc(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    if model.__doc__ is None or doc == inspect.getdoc(BaseModel):
        return ""
    first = doc.split("\n\n")[0]
    return _md(" ".join(first.split()))


def _md(text: str) -> str:
    """Plain text for a Markdown table cell."""
    return text.replace("``", "`").replace("<", "&lt;").replace(">", "&gt;")


def suite_keys_markdown() -> str:
    """Markdown tables of every suite key: one table per model, reached from ``Suite``."""
    seen: list[type[BaseModel]] = []
    queue: list[type[BaseModel]] = [Suite]
    while queue:
        model = queue.pop(0)
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            queue += [m for m in _models(field.annotation) if m not in seen]
    parts = []
    for model in seen:
        title = "the suite (top level)" if model.__name__ == "Suite" else f"`{model.__name__}`"
        used = _used_in(model, seen)
        parts.append(f"**{title}**" + (f" (in {used})" if used else "")
                     + (f": {_doc(model)}" if _doc(model) else ""))
        parts.append("")
        parts.append("| key | type | default | meaning |")
        parts.append("|---|---|---|---|")
        for name, field in model.model_fields.items():
            note = _md(_note(model, name, field)).replace("|", "\\|").replace("\n", " ")
            parts.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | "
                         f"{' '.join(note.split())} |")
        if model is Suite:
            parts += ["", EXTENSION_KEYS]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def _used_in(model: type[BaseModel], models: list[type[BaseModel]]) -> str:
    places = []
    for parent in models:
        for name, field in parent.model_fields.items():
            if model in _models(field.annotation):
                places.append(f"`{name}`")
    return ", ".join(dict.fromkeys(places))


def replace_block(text: str, block: str) -> str:
    """``text`` with the generated block between the markers replaced by ``block``."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {START} ... {END} block")
    return pattern.sub(lambda _: f"{START}\n{block}{END}", text)


def main(argv: list[str] | None = None) -> int:
    """``python -m moebench.suite.schema_doc [--write FILE]``: print the block, or update FILE.

    Parameters
    ----------
    argv
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (0).
    """
    parser = argparse.ArgumentParser(description="print or write the suite-keys reference")
    parser.add_argument("--write", type=Path, default=None,
                        help="update this file (docs/suite-reference.md)")
    args = parser.parse_args(argv)
    block = suite_keys_markdown()
    if args.write is None:
        print(block, end="")
        return 0
    text = args.write.read_text()
    args.write.write_text(replace_block(text, block))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
