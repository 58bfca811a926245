"""Property tests: mutated real suites either resolve or fail with a SuiteError that says where.

The project's own suites (``suites/smoke.yaml``, ``suites/paper.yaml``) are mutated at random:
wrong types, deleted required keys, unknown keys at any depth, unknown plugin names, zero,
negative or absurd sizes, ``k > n``, NaN and infinities, huge grids and repetitions, alias
bombs, deep nesting, duplicate keys, random bytes and truncation. Whatever comes out,
``parse_suite`` followed by ``resolve(..., max_cells=MAX_CELLS_WITHOUT_CONFIRMATION)`` must
either succeed or raise :class:`SuiteError` whose every problem names a line; nothing else may
escape, and nothing may take long.

Runs are derandomized (no example database), so CI sees the same examples every time.
"""

from __future__ import annotations

import copy
import json
import re
import signal
import string
import threading
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from moebench.errors import SuiteError
from moebench.suite import (
    MAX_CELLS_WITHOUT_CONFIRMATION,
    MAX_REPETITIONS,
    count_cells,
    parse_suite,
    resolve,
)

ROOT = Path(__file__).resolve().parents[2]
SUITES = {name: (ROOT / "suites" / name).read_text() for name in ("smoke.yaml", "paper.yaml")}
DATA = {name: yaml.safe_load(text) for name, text in SUITES.items()}

FUZZ = settings(
    max_examples=80,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=15),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

SIZE_KEYS = ["n", "n_test", "k", "d", "max_iter", "repetitions", "r", "split", "gate_steps",
             "iteration", "batch_size", "epochs"]
FLOAT_KEYS = ["sigma", "lr", "eta", "tol", "gate_ridge", "gate_radius", "timeout", "scale",
              "radius", "mean", "std", "r", "p", "gate_norm", "expert_lr", "test_fraction"]
PLUGIN_NAMES = ["synthetic-moe", "symmoline", "gd", "joint-em", "tensor-em", "regression-moe",
                "param_error", "cpu", "cuda", "table", "uci-gal", "nope", "", "GD", "gd "]
BAD_SIZES = [0, -1, -(10**9), 10**12, 10**100, MAX_REPETITIONS, MAX_REPETITIONS + 1, 1.5, True]
NON_FINITE = [float("nan"), float("inf"), float("-inf")]
ALIAS, DEEP = "__ALIAS_SENTINEL__", "__DEEP_SENTINEL__"

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(PLUGIN_NAMES + SIZE_KEYS + NON_FINITE),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(SIZE_KEYS + FLOAT_KEYS + ["name", "x"]), scalars,
                    max_size=3),
)
keys = st.one_of(st.sampled_from(SIZE_KEYS + FLOAT_KEYS + ["name", "grid", "params", "quick",
                                                           "model", "label", "typo"]),
                 st.text(string.ascii_letters + "_", min_size=1, max_size=10))


# --------------------------------------------------------------------------------------------
# Helpers


class Hang(AssertionError):
    """An example ran for longer than any suite should take to check."""


@contextmanager
def time_limit(seconds: float):
    """Fail (instead of hanging CI) if the body runs longer than ``seconds`` (POSIX only)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise Hang(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check(source: str | bytes, quick: bool = False) -> None:
    """The property: success, or a SuiteError each of whose problems names a line."""
    with time_limit(30):
        try:
            suite = parse_suite(source, "fuzz.yaml")
            resolved = resolve(suite, "fuzz.yaml", quick=quick,
                               max_cells=MAX_CELLS_WITHOUT_CONFIRMATION)
        except SuiteError as exc:
            event(f"SuiteError: {_kind(exc.problems[0][1])}")
            assert exc.problems, exc
            assert str(exc).startswith("invalid suite fuzz.yaml:")
            for where, message in exc.problems:
                assert isinstance(message, str) and message.strip(), (where, message)
                if where == "...":  # the last entry of a long list: how many were left out
                    assert re.fullmatch(r"\d+ more problems not shown", message), message
                else:
                    assert re.search(r"\bline \d+", where), (where, message)
            return
    event("resolved")
    cells = sum(len(e.datasets) * len(e.algorithms) * e.repetitions for e in resolved)
    assert cells == count_cells(suite, quick=quick) <= MAX_CELLS_WITHOUT_CONFIRMATION


def _kind(message: str) -> str:
    """A short class of a problem message, for hypothesis' statistics."""
    return re.sub(r"'[^']*'|\d[\d,]*|\(.*", "_", message)[:40]


def all_paths(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += all_paths(value, path + (key,))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += all_paths(value, path + (i,))
    return out


def get(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def set_at(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    get(tree, path[:-1])[path[-1]] = value
    return tree


def components(tree: Any) -> list[tuple[Any, ...]]:
    """Paths of every dataset and algorithm entry (dicts inside ``datasets``/``algorithms``)."""
    return [p for p in all_paths(tree) if len(p) >= 2 and p[-2] in ("datasets", "algorithms")
            and isinstance(get(tree, p), dict)]


def dump(tree: Any) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=10_000)


# --------------------------------------------------------------------------------------------
# Mutations of the parsed data


def mutate(data: st.DataObject, tree: Any) -> Any:
    op = data.draw(st.sampled_from([
        "wrong_type", "delete", "unknown_key", "plugin_name", "size", "k_gt_n", "non_finite",
        "huge_grid", "huge_repetitions",
    ]))
    paths = all_paths(tree)
    entries = components(tree)
    if op == "wrong_type":
        return set_at(tree, data.draw(st.sampled_from(paths)), data.draw(values))
    if op == "delete":
        candidates = [p for p in paths if p]
        if candidates:
            path = data.draw(st.sampled_from(candidates))
            parent = get(tree, path[:-1])
            del parent[path[-1]]
        return tree
    if op == "unknown_key":
        dicts = [p for p in paths if isinstance(get(tree, p), dict)]
        if dicts:
            get(tree, data.draw(st.sampled_from(dicts)))[data.draw(keys)] = data.draw(values)
        return tree
    if op == "plugin_name" and entries:
        entry = get(tree, data.draw(st.sampled_from(entries)))
        entry["name"] = data.draw(st.one_of(st.sampled_from(PLUGIN_NAMES), st.text(max_size=8)))
        return tree
    if op == "size" and entries:
        entry = get(tree, data.draw(st.sampled_from(entries)))
        where = data.draw(st.sampled_from(["params", "quick", "grid"]))
        key, size = data.draw(st.sampled_from(SIZE_KEYS)), data.draw(st.sampled_from(BAD_SIZES))
        bucket = entry.setdefault(where, {})
        if isinstance(bucket, dict):
            bucket[key] = [size] if where == "grid" else size
        return tree
    if op == "size":
        budgets = [p for p in paths if p and p[-1] in ("budget", "quick")]
        if budgets and isinstance(get(tree, budgets[0]), dict):
            get(tree, budgets[0])["max_iter" if budgets[0][-1] == "budget" else "repetitions"] = \
                data.draw(st.sampled_from(BAD_SIZES))
        return tree
    if op == "k_gt_n" and entries:
        entry = get(tree, data.draw(st.sampled_from(entries)))
        n = data.draw(st.integers(1, 5))
        k, d = data.draw(st.integers(n + 1, 50)), data.draw(st.integers(1, 3))
        entry["params"] = {**(entry.get("params") or {}), "n": n, "n_test": n, "k": k, "d": d}
        entry.pop("grid", None)
        return tree
    if op == "non_finite":
        numbers = [p for p in paths if p and isinstance(get(tree, p), float | int)
                   and not isinstance(get(tree, p), bool)]
        value = data.draw(st.sampled_from(NON_FINITE))
        if numbers and data.draw(st.booleans()):
            return set_at(tree, data.draw(st.sampled_from(numbers)), value)
        if entries:
            entry = get(tree, data.draw(st.sampled_from(entries)))
            params = entry.setdefault("params", {})
            if isinstance(params, dict):
                params[data.draw(st.sampled_from(FLOAT_KEYS))] = value
        return tree
    if op == "huge_grid" and entries:
        entry = get(tree, data.draw(st.sampled_from(entries)))
        names = data.draw(st.lists(st.sampled_from(SIZE_KEYS + FLOAT_KEYS), min_size=1,
                                   max_size=6, unique=True))
        size = data.draw(st.sampled_from([2, 10, 60, 400]))
        entry["grid"] = {name: list(range(1, size + 1)) for name in names}
        for name in names:
            if isinstance(entry.get("params"), dict):
                entry["params"].pop(name, None)
        return tree
    if op == "huge_repetitions":
        targets = [()] + [p for p in paths if p and p[-1] == "quick"
                          and isinstance(get(tree, p), dict)]
        target = get(tree, data.draw(st.sampled_from(targets)))
        if isinstance(target, dict):
            target["repetitions"] = data.draw(st.sampled_from([1000, 10**5, MAX_REPETITIONS]))
        return tree
    return tree


@FUZZ
@given(data=st.data())
def test_mutated_real_suites_resolve_or_say_where(fresh_plugins, data):
    name = data.draw(st.sampled_from(sorted(DATA)), label="suite")
    tree = copy.deepcopy(DATA[name])
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        tree = mutate(data, tree)
    check(dump(tree), quick=data.draw(st.booleans(), label="quick"))


# --------------------------------------------------------------------------------------------
# Mutations of the YAML text: aliases, nesting, duplicate keys


def alias_bomb(fanout: int, levels: int) -> str:
    lines = [f"x-bomb-0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for i in range(1, levels + 1):
        lines.append(f"x-bomb-{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


def duplicate_a_key(data: st.DataObject, text: str) -> str:
    lines = text.split("\n")
    keyed = [i for i, line in enumerate(lines) if re.match(r"^\s*[A-Za-z_]+:", line)]
    if not keyed:
        return text
    i = data.draw(st.sampled_from(keyed), label="duplicated line")
    line = lines[i]
    copy_of = line.replace("- ", "  ", 1) if line.lstrip().startswith("- ") else line
    value = data.draw(st.one_of(st.just(None), st.sampled_from(["1", "x", "[]", "{}"])))
    if value is not None:
        copy_of = copy_of.split(":", 1)[0] + ": " + value
    lines.insert(i + 1, copy_of)
    return "\n".join(lines)


@FUZZ
@given(data=st.data())
def test_yaml_tricks_in_real_suites_are_refused_or_resolved(fresh_plugins, data):
    name = data.draw(st.sampled_from(sorted(DATA)), label="suite")
    tree = copy.deepcopy(DATA[name])
    tricks = data.draw(st.lists(st.sampled_from(["alias", "deep", "duplicate"]), min_size=1,
                                max_size=3, unique=True), label="tricks")
    paths = [p for p in all_paths(tree) if p]
    prefix = ""
    if "alias" in tricks:
        fanout, levels = data.draw(st.integers(1, 12)), data.draw(st.integers(0, 12))
        prefix = alias_bomb(fanout, levels)
        tree = set_at(tree, data.draw(st.sampled_from(paths), label="alias at"), ALIAS)
        alias = f"*l{levels}"
    if "deep" in tricks:
        depth = data.draw(st.sampled_from([5, 30, 45, 49, 50, 51, 60, 300, 5000]))
        tree = set_at(tree, data.draw(st.sampled_from(all_paths(tree)[1:]), label="deep at"), DEEP)
        nested = data.draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("[{b: ", "}]")]))
    text = prefix + dump(tree)
    if "alias" in tricks:
        text = text.replace(ALIAS, alias)
    if "deep" in tricks:
        text = text.replace(DEEP, nested[0] * depth + "1" + nested[1] * depth)
    if "duplicate" in tricks:
        text = duplicate_a_key(data, text)
    check(text)


# --------------------------------------------------------------------------------------------
# Random bytes, truncation


@FUZZ
@given(data=st.data())
def test_random_bytes_in_real_suites_are_refused_or_resolved(fresh_plugins, data):
    name = data.draw(st.sampled_from(sorted(SUITES)), label="suite")
    raw = SUITES[name].encode()
    op = data.draw(st.sampled_from(["insert", "overwrite", "truncate", "only_bytes"]))
    at = data.draw(st.integers(0, len(raw)), label="at")
    junk = data.draw(st.binary(min_size=1, max_size=16), label="junk")
    if op == "insert":
        raw = raw[:at] + junk + raw[at:]
    elif op == "overwrite":
        raw = raw[:at] + junk + raw[at + len(junk):]
    elif op == "truncate":
        raw = raw[:at]
    else:
        raw = data.draw(st.binary(max_size=200))
    check(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    check(text)


# --------------------------------------------------------------------------------------------
# Suite names


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(name=st.one_of(st.text(max_size=12), st.from_regex(r"[./\\~ -]{0,3}[A-Za-z0-9._-]{0,6}",
                                                          fullmatch=True)))
def test_accepted_suite_names_stay_inside_the_output_folder(name):
    quoted = json.dumps(name)  # a YAML double-quoted scalar
    text = f"name: {quoted}\ndatasets: [{{name: d}}]\nalgorithms: [{{name: a}}]\n"
    try:
        suite = parse_suite(text, "fuzz.yaml")
    except SuiteError as exc:
        assert all(re.search(r"\bline \d+", where) for where, _ in exc.problems)
        return
    out = Path("/results/out")
    target = out / suite.name
    assert suite.name not in ("", ".", "..") and "/" not in suite.name and "\\" not in suite.name
    assert target.parent == out and ".." not in target.parts
