"""Selecting part of a suite from the command line (benchopt's syntax).

``moebench run SUITE -e EXPERIMENT -a NAME[param=value,...] -d NAME[param=value,...]``:

- ``-e NAME`` keeps the named experiments (repeatable);
- ``-a NAME`` keeps the algorithm entries whose label or plugin name is ``NAME`` (repeatable);
  ``NAME[lr=0.1]`` also fixes a parameter, ``NAME[lr=[0.1,0.5]]`` sweeps it (it replaces the
  entry's grid or parameter of that name); a registered algorithm the suite does not list is
  added to every selected experiment;
- ``-d NAME[...]`` does the same for datasets.

Values are read as YAML, as a suite file's are (``1e-3``, ``true``, ``[1, 2]``, ``adam``). The
selected suite is then validated exactly like a suite file (unknown parameters and bad values
name the entry).
Misspelt names get a "did you mean".
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from .. import plugins
from ..errors import MoebenchError, SuiteError
from .bounded_yaml import YamlRefused, load_value
from .problems import did_you_mean, validation_message
from .resolved import ResolvedExperiment, variant_id
from .schema import Component, Suite


class SelectionError(MoebenchError):
    """A command-line selection names nothing in the suite, or is malformed."""


_UNKNOWN = re.compile(r"unknown ([\w ]+?) '([^']+)'; (?:valid names|valid|this experiment has|"
                      r"choose from): (.+)$")


def with_suggestions(message: str) -> str:
    """Add a "did you mean" to each line of ``message`` that names an unknown thing and lists
    the valid names (as suite and plugin errors do)."""
    out = []
    for line in message.split("\n"):
        m = _UNKNOWN.search(line)
        if m and "did you mean" not in line:
            choices = [c.strip() for c in m.group(3).split(",") if c.strip()]
            hint = did_you_mean(m.group(2), choices)
            if hint:
                line += f" ({hint.removeprefix('; ')})"
        out.append(line)
    return "\n".join(out)


@dataclass
class Selector:
    """``NAME[param=value,...]`` parsed: the name and the values of each parameter."""

    name: str
    values: dict[str, list[Any]] = field(default_factory=dict)
    text: str = ""


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_selector(text: str) -> Selector:
    """Parse ``NAME`` or ``NAME[param=value,param=[v1,v2],...]``.

    Raises
    ------
    SelectionError
        For unbalanced brackets, a parameter without ``=`` or a value that is not YAML.
    """
    text = text.strip()
    m = re.fullmatch(r"([^\[\]]+?)\s*(?:\[(.*)\])?", text, flags=re.S)
    if not m or not m.group(1).strip():
        raise SelectionError(f"cannot read the selection {text!r}: expected NAME or "
                             "NAME[param=value,...]")
    selector = Selector(m.group(1).strip(), {}, text)
    for part in _split_top(m.group(2) or ""):
        if "=" not in part:
            raise SelectionError(f"cannot read {part!r} in {text!r}: expected param=value")
        key, raw = (s.strip() for s in part.split("=", 1))
        try:
            value = load_value(raw) if raw else None
        except (yaml.YAMLError, YamlRefused):
            raise SelectionError(f"cannot read the value {raw!r} of {key!r} in {text!r}") \
                from None
        selector.values[key] = value if isinstance(value, list) else [value]
        if not selector.values[key]:
            raise SelectionError(f"{key!r} in {text!r} has no value")
    return selector


def _override(entry: dict[str, Any], values: dict[str, list[Any]]) -> dict[str, Any]:
    """The entry with the selector's values: one value fixes a parameter, several sweep it.

    A fixed value that changes the entry's own is named in its ids (``gd[lr=0.1]``, not
    ``gd``: it is not the suite's gd). Beside a swept parameter it joins the grid with its one
    value, after the swept keys, so that each variant has one bracket:
    ``gd[lr=0.1,optimizer=adam]``, not ``gd[optimizer=adam][lr=0.1]``.
    """
    entry = {**entry, "params": dict(entry.get("params") or {}),
             "grid": dict(entry.get("grid") or {})}
    fixed: list[str] = []
    for key, vals in values.items():
        before = entry["params"].pop(key, _UNSET)
        if len(vals) == 1 and key not in entry["grid"]:
            entry["params"][key] = vals[0]
            if before is _UNSET or before != vals[0]:
                fixed.append(key)
        else:  # swept: a key the suite sweeps keeps its place, and its ids their [key=value]
            entry["grid"][key] = vals
    if entry["grid"]:
        for key in fixed:
            entry["grid"][key] = [entry["params"].pop(key)]
    else:
        entry.pop("grid")
        if fixed:
            base = Component.model_construct(name=entry["name"], label=entry.get("label"))
            entry["label"] = variant_id(base, {key: entry["params"][key] for key in fixed})
    return entry


_UNSET = object()


def _check_parameter_names(sel: Selector, kind: str, exps: list[dict[str, Any]],
                           key: str) -> None:
    """A parameter the selector names that the plugin lacks: one line that blames the option
    (not the suite file), with a "did you mean"."""
    if not sel.values:
        return
    found = plugins.components(kind)
    names = {entry["name"] for e in exps for entry in e[key]
             if sel.name in (entry.get("label"), entry["name"])} or {sel.name}
    flag = "-a" if kind == "algorithms" else "-d"
    for name in sorted(names):
        cls = found.get(name)
        fields = list(getattr(getattr(cls, "Params", None), "model_fields", {}) or {})
        for param in sel.values:
            if cls is not None and param not in fields:
                raise SelectionError(
                    f"{flag} {sel.text or sel.name!r}: {kind[:-1]} {name!r} has no parameter "
                    f"{param!r}{did_you_mean(param, fields)} (its parameters: "
                    f"{', '.join(fields) or 'none'})")


def _select_entries(entries: list[dict[str, Any]], selectors: list[Selector], kind: str
                    ) -> list[dict[str, Any]]:
    out = []
    for sel in selectors:
        matched = [e for e in entries if sel.name in (e.get("label"), e["name"])]
        if not matched and sel.name in plugins.components(kind):
            matched = [{"name": sel.name}]
        out += [_override(e, sel.values) for e in matched]
    return out


def _ids(entries: list[dict[str, Any]]) -> set[str]:
    """The variant ids the entries expand to (as :func:`moebench.suite.resolve` names them)."""
    out = set()
    for entry in entries:
        component = Component.model_construct(name=entry["name"], label=entry.get("label"))
        grid = entry.get("grid") or {}
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            out.add(variant_id(component, dict(zip(keys, values, strict=True))))
    return out


def _prune_reference(exp: dict[str, Any]) -> None:
    """Drop the reference values and claims that name variants the selection removed."""
    ref = exp.get("reference")
    if not ref:
        return
    datasets, algorithms = _ids(exp["datasets"]), _ids(exp["algorithms"])
    ref["values"] = [v for v in ref.get("values") or []
                     if v["dataset"] in datasets and v["algorithm"] in algorithms]
    ref["claims"] = [c for c in ref.get("claims") or []
                     if c["better"] in algorithms and c["than"] in algorithms]


def _prune_phase_figures(exp: dict[str, Any], dropped: set[str]) -> None:
    """Drop the phase diagrams whose algorithm or reference the selection removed, and the
    experiments it removed from the rest (a name the suite never had stays, to be refused)."""
    algorithms, kept = _ids(exp["algorithms"]), []
    for fig in exp.get("figures") or []:
        if fig.get("kind") == "phase":
            if fig["algorithm"] not in algorithms or fig["reference"] not in algorithms:
                continue
            fig["experiments"] = [n for n in fig.get("experiments") or [] if n not in dropped]
        kept.append(fig)
    if "figures" in exp:
        exp["figures"] = kept


def _apply_timeout(data: dict[str, Any], experiments: list[dict[str, Any]],
                   timeout: float) -> None:
    """Set ``timeout`` in every budget (suite, experiments, quick settings, algorithm entries)
    and give the suite one, so that experiments without a budget of their own get it too."""
    data["budget"] = {**(data.get("budget") or {}), "timeout": timeout}
    holders = [data, *experiments]
    holders += [h["quick"] for h in list(holders) if h.get("quick")]
    holders += [entry for e in experiments for entry in e["algorithms"]]
    for holder in holders:
        if holder.get("budget"):
            holder["budget"] = {**holder["budget"], "timeout": timeout}


def select(suite: Suite, experiments: list[str] | tuple[str, ...] = (),
           algorithms: list[str] | tuple[str, ...] = (),
           datasets: list[str] | tuple[str, ...] = (),
           budget_timeout: float | None = None, source: str = "<suite>") -> Suite:
    """The part of ``suite`` that the command line selects (see the module docstring).

    Parameters
    ----------
    suite
        A parsed suite.
    experiments
        Experiment names to keep (all when empty).
    algorithms, datasets
        Selectors ``NAME[param=value,...]`` (all entries when empty).
    budget_timeout
        Replaces ``budget.timeout`` (seconds of algorithm time per cell) everywhere.
    source
        The suite file, for messages.

    Returns
    -------
    Suite
        A new suite, validated by pydantic (plugin parameters are checked by ``resolve``).

    Raises
    ------
    SelectionError
        A name that matches nothing (with a "did you mean"), or a malformed selector.
    SuiteError
        The selected suite is not valid.
    """
    if not (experiments or algorithms or datasets or budget_timeout is not None):
        return suite
    alg_selectors = [parse_selector(a) for a in algorithms]
    ds_selectors = [parse_selector(d) for d in datasets]
    data = suite.model_dump(exclude_unset=True)
    single = suite.experiments is None
    exps = ([{"name": suite.name, "datasets": data.pop("datasets"),
              "algorithms": data.pop("algorithms")}] if single else data.pop("experiments"))
    names = [e["name"] for e in exps]
    for name in experiments:
        if name not in names:
            raise SelectionError(f"no experiment {name!r} in {source}{did_you_mean(name, names)}"
                                 f" (experiments: {', '.join(names)})")
    if experiments:
        exps = [e for e in exps if e["name"] in experiments]
    for selectors, key, kind in ((alg_selectors, "algorithms", "algorithms"),
                                 (ds_selectors, "datasets", "datasets")):
        present = {n for e in exps for entry in e[key] for n in (entry["name"],
                                                                  entry.get("label")) if n}
        for sel in selectors:
            if sel.name not in present and sel.name not in plugins.components(kind):
                hint = did_you_mean(sel.name, present | set(plugins.components(kind)))
                raise SelectionError(
                    f"no {kind[:-1]} {sel.name!r} in the selected experiments of {source} and "
                    f"no such plugin{hint} ({kind} here: {', '.join(sorted(present))})")
            _check_parameter_names(sel, kind, exps, key)
        if selectors:
            for e in exps:
                e[key] = _select_entries(e[key], selectors, kind)
    kept = [e for e in exps if e["datasets"] and e["algorithms"]]
    if not kept:
        raise SelectionError(f"the selection leaves no experiment of {source} with both a "
                             "dataset and an algorithm")
    if budget_timeout is not None:
        _apply_timeout(data, kept, budget_timeout)
    dropped = set(names) - {e["name"] for e in kept}
    for e in kept:
        _prune_reference(e)
        _prune_phase_figures(e, dropped)
    if single:
        data["datasets"], data["algorithms"] = kept[0]["datasets"], kept[0]["algorithms"]
    else:
        data["experiments"] = kept
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:  # say it in suite terms
        raise SuiteError([(".".join(str(p) for p in err["loc"]) or "(top level)",
                           validation_message(err)) for err in exc.errors()],
                         f"{source} (as selected on the command line)") from None


def grid_summary(experiments: list[ResolvedExperiment]) -> list[dict[str, Any]]:
    """Per resolved experiment: its dataset and algorithm variant ids, seeds and cells."""
    return [{"experiment": e.name, "datasets": [v.id for v in e.datasets],
             "algorithms": [v.id for v in e.algorithms], "repetitions": e.repetitions,
             "cells": len(e.datasets) * len(e.algorithms) * e.repetitions}
            for e in experiments]
