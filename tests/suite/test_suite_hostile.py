"""Hostile suite files: every class of bad input ends in a SuiteError naming where, quickly.

Each test covers a class of problem (many shapes of it), not one example: alias expansion,
deep nesting, duplicate keys, bytes that are not UTF-8, values YAML cannot build, suites
too big to expand, suite names that would leave the output folder, and non-finite floats.
"""

from __future__ import annotations

import json
import math
import re
import time
import typing
from pathlib import Path

import pydantic
import pytest

from moebench import plugins
from moebench.errors import SuiteError
from moebench.params import Params
from moebench.suite import (
    MAX_CELLS,
    MAX_CELLS_WITHOUT_CONFIRMATION,
    MAX_REPETITIONS,
    MAX_YAML_ALIASES,
    MAX_YAML_DEPTH,
    count_cells,
    load_suite,
    parse_suite,
    resolve,
)
from moebench.suite import yaml_lines as _yaml_lines

BASE = """\
name: tiny
seed: 1
repetitions: 2
budget: {max_iter: 5, timeout: 10}
datasets:
  - name: synthetic-moe
    params: {n: 200, d: 5, sigma: 0.3}
    grid: {k: [2, 3]}
algorithms:
  - name: joint-em
  - name: gd
    params: {lr: 0.1}
"""


def refused(text: str | bytes, *, seconds: float = 5.0) -> tuple[str, str]:
    """The single problem parse_suite reports, checked to come fast."""
    start = time.perf_counter()
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "s.yaml")
    assert time.perf_counter() - start < seconds
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


def resolve_problems(text: str, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(SuiteError) as info:
        resolve(parse_suite(text, "s.yaml"), "s.yaml", **kwargs)
    return info.value.problems


def line_of(where: str) -> int:
    match = re.search(r"line (\d+)", where)
    assert match, where
    return int(match.group(1))


# --------------------------------------------------------------------------------------------
# 1. YAML: alias expansion, recursion, nesting, duplicate keys, encoding, unbuildable values


def _laughs(fanout: int, levels: int, flow: bool) -> str:
    """An alias bomb: level i is a list of ``fanout`` aliases of level i - 1."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for i in range(1, levels + 1):
        refs = [f"*l{i - 1}"] * fanout
        if flow:
            lines.append(f"l{i}: &l{i} [{', '.join(refs)}]")
        else:
            lines.append(f"l{i}: &l{i}\n" + "".join(f"  - {r}\n" for r in refs).rstrip("\n"))
    return "name: bomb\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("fanout,levels", [(2, 40), (3, 25), (9, 9), (10, 10), (50, 5)])
@pytest.mark.parametrize("flow", [True, False])
def test_alias_bombs_are_refused_before_expansion(fanout, levels, flow):
    text = _laughs(fanout, levels, flow)
    where, message = refused(text, seconds=2.0)
    assert "more than" in message and "aliases are expanded" in message
    assert "line" in where and "column" in where
    assert 1 < line_of(where) <= text.count("\n")
    # The line map (used for messages) does not expand the aliases either.
    start = time.perf_counter()
    _yaml_lines(text)
    assert time.perf_counter() - start < 2.0


def test_alias_bomb_in_mappings_and_merge_keys_is_refused():
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4}"]
    for i in range(1, 12):
        lines.append(f"m{i}: &m{i} {{a: *m{i - 1}, b: *m{i - 1}, c: *m{i - 1}, d: *m{i - 1}}}")
    where, message = refused("name: x\n" + "\n".join(lines) + "\n")
    assert "aliases are expanded" in message and line_of(where) > 1


def test_too_many_aliases_are_refused():
    refs = ", ".join(["*a"] * (MAX_YAML_ALIASES + 1))
    where, message = refused(f"name: x\nbase: &a 1\nmany: [{refs}]\n")
    assert f"more than {MAX_YAML_ALIASES} aliases" in message and where.startswith("many[")


@pytest.mark.parametrize(
    "text",
    [
        "name: x\na: &a [*a]\n",
        "name: x\na: &a {self: *a}\n",
        "name: x\na: &a [1, [2, [3, *a]]]\n",
        "name: x\na: &a\n  - b: &b\n      c: *a\n",
    ],
)
def test_recursive_aliases_are_refused(text):
    where, message = refused(text)
    assert "recursive" in message and where.startswith("a") and "line" in where


def test_moderate_anchors_and_merge_keys_still_work(fresh_plugins):
    text = BASE.replace("algorithms:\n", "algorithms:\n  - name: gd\n    label: gd-a\n"
                        "    params: &shared {lr: 0.3}\n  - name: gd\n    label: gd-b\n"
                        "    params: *shared\n")
    text = text.replace("budget: {max_iter: 5, timeout: 10}",
                        "budget: &b {max_iter: 5, timeout: 10}\nquick: {budget: {<<: *b, "
                        "max_iter: 1}}")
    (exp,) = resolve(parse_suite(text))
    assert {a.id for a in exp.algorithms} >= {"gd-a", "gd-b"}
    (fast,) = resolve(parse_suite(text), quick=True)
    assert (fast.budget.max_iter, fast.budget.timeout) == (1, 10)


def _nested(style: str, depth: int) -> str:
    if style == "flow-seq":
        return "x: " + "[" * depth + "1" + "]" * depth + "\n"
    if style == "flow-map":
        return "x: " + "{a: " * depth + "1" + "}" * depth + "\n"
    if style == "block-map":
        return "x:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth - 1)) + \
            "  " * depth + "leaf: 1\n"
    if style == "block-seq":
        return "x:\n" + "".join("  " * (i + 1) + "-\n" for i in range(depth - 1)) + \
            "  " * depth + "- 1\n"
    if style == "mixed":
        return "x: " + "[{a: " * (depth // 2) + "1" + "}]" * (depth // 2) + "\n"
    raise AssertionError(style)


@pytest.mark.parametrize("style", ["flow-seq", "flow-map", "block-map", "block-seq", "mixed"])
@pytest.mark.parametrize("depth", [MAX_YAML_DEPTH + 1, 500, 100_000])
def test_deep_nesting_is_refused_with_line_and_column(style, depth):
    if style.startswith("block"):  # block indentation grows with the square of the depth
        depth = min(depth, 2000)
    text = "name: x\n" + _nested(style, depth)
    where, message = refused(text)
    assert f"nested more than {MAX_YAML_DEPTH} levels deep" in message
    assert where.startswith("x") and re.search(r"\(line \d+, column \d+\)", where)
    assert line_of(where) >= 2


@pytest.mark.parametrize("style", ["flow-seq", "flow-map", "block-map", "block-seq"])
def test_nesting_within_the_limit_is_not_refused(style):
    # The document root is level 1 and "x" level 2, leaving MAX_YAML_DEPTH - 2 nested levels.
    text = ("name: x\ndatasets: [{name: a}]\nalgorithms: [{name: b}]\n"
            + _nested(style, MAX_YAML_DEPTH - 3))
    where, message = refused(text)
    assert message.startswith("unknown key 'x'; valid: name, ") and where.startswith("x (line 4)")


def test_nesting_through_aliases_counts_the_expanded_depth():
    inner = "[" * 30 + "1" + "]" * 30
    text = f"name: x\na: &a {inner}\nb: &b {'[' * 30}*a{']' * 30}\n"
    where, message = refused(text)
    assert "levels deep" in message and where.startswith("b") and line_of(where) == 3


@pytest.mark.parametrize(
    "text,key,second,first",
    [
        ("name: a\nseed: 1\nname: b\n", "name", 3, 1),
        ("name: a\nbudget:\n  max_iter: 1\n  timeout: 5\n  max_iter: 2\n", "max_iter", 5, 3),
        ("name: a\nbudget: {max_iter: 1, max_iter: 2}\n", "max_iter", 2, 2),
        ("name: a\nalgorithms:\n  - name: gd\n    params: {lr: 1}\n    name: joint-em\n",
         "name", 5, 3),
        ("name: a\n'seed': 1\nseed: 2\n", "seed", 3, 2),
        ("name: a\ndatasets:\n  - params:\n      n: 1\n\n\n      n: 2\n", "n", 7, 4),
        ("name: a\nx: {1: a, 0x1: b}\n", 1, 2, 2),
    ],
)
def test_duplicate_keys_name_both_lines(text, key, second, first):
    where, message = refused(text)
    assert message == f"duplicate key {key!r} (line {second}; first at line {first})"
    assert line_of(where) == second and "column" in where


def test_duplicate_key_path_points_into_lists():
    text = "name: a\nexperiments:\n  - name: e\n  - name: f\n    metrics: [x]\n    metrics: [y]\n"
    where, message = refused(text)
    assert where.startswith("experiments[1].metrics (line 6")
    assert message == "duplicate key 'metrics' (line 6; first at line 5)"


def test_merge_keys_may_be_overridden_without_a_duplicate_error(fresh_plugins):
    text = BASE.replace("budget: {max_iter: 5, timeout: 10}",
                        "budget: {<<: {max_iter: 5, timeout: 10}, max_iter: 6}")
    (exp,) = resolve(parse_suite(text))
    assert (exp.budget.max_iter, exp.budget.timeout) == (6, 10)


@pytest.mark.parametrize(
    "bad", [b"\xff", b"\xfe\xff", b"\xc3", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80"]
)
@pytest.mark.parametrize("where_in_file", ["start", "middle", "end"])
def test_bytes_that_are_not_utf8_are_refused(tmp_path, bad, where_in_file):
    good = BASE.encode()
    at = {"start": 0, "middle": good.index(b"datasets"), "end": len(good)}[where_in_file]
    data = good[:at] + bad + good[at:]
    expected_line = good.count(b"\n", 0, at) + 1
    for problems in (_problems_of(lambda: parse_suite(data, "s.yaml")),
                     _problems_of(lambda: load_suite(_write(tmp_path, data)))):
        ((where, message),) = problems
        assert message.startswith("not UTF-8 text: ")
        assert f"at byte {at}" in message and where == f"line {expected_line}"


def _problems_of(call) -> list[tuple[str, str]]:
    with pytest.raises(SuiteError) as info:
        call()
    return info.value.problems


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_bytes(data)
    return path


def test_utf8_with_a_bom_and_non_ascii_text_is_fine(tmp_path, fresh_plugins):
    text = BASE.replace("seed: 1", "description: Müller & Ngô, σ=0.3\nseed: 1")
    data = "\ufeff".encode() + text.encode()
    suite = load_suite(_write(tmp_path, data))
    assert suite.description.startswith("Müller")
    resolve(suite)


@pytest.mark.parametrize(
    "value",
    ["2001-13-45", "2001-02-30", "9" * 5000, "-" + "1" * 4400, "0x" + "f" * 4000,
     "!!timestamp 2001-99-01", "!!int nonsense", "!!float nonsense", "!!binary '***'",
     "!!python/object:os.system 1", "!!set {a: 1}"],
)
def test_values_yaml_cannot_build_are_refused_with_their_line(value):
    text = (f"name: x\nseed: 1\ndescription: >\n  text\nrepetitions: {value}\n"
            "datasets: [{name: a}]\nalgorithms: [{name: b}]\n")
    try:
        parse_suite(text, "s.yaml")
    except SuiteError as exc:
        ((where, message),) = exc.problems
        assert line_of(where) == 5, (where, message)
    else:
        pytest.fail("accepted")


@pytest.mark.parametrize("text", ["name: x\u0000", "name: x\x07\n", "name: x\ud800\n",
                                  "a: 1\n---\nb: 2\n", "name: [x\n", "a: b: c\n", "a: *nope\n"])
def test_malformed_yaml_always_has_a_line(text):
    where, message = refused(text)
    assert message.startswith("malformed YAML: ") and line_of(where) >= 1


# --------------------------------------------------------------------------------------------
# 2. Size: cells are counted before anything is expanded


def _grid_suite(sizes: list[int], algo_sizes: list[int], reps: int, experiments: int = 1) -> str:
    def grid(sizes: list[int]) -> str:
        return "{" + ", ".join(f"g{i}: {list(range(m))}" for i, m in enumerate(sizes)) + "}"

    body = "".join(
        f"  - name: e{i}\n"
        f"    datasets: [{{name: synthetic-moe, grid: {grid(sizes)}}}]\n"
        f"    algorithms: [{{name: gd, grid: {grid(algo_sizes)}}}, {{name: joint-em}}]\n"
        for i in range(experiments)
    )
    return f"name: big\nrepetitions: {reps}\nexperiments:\n{body}"


@pytest.mark.parametrize(
    "sizes,algo_sizes,reps,experiments",
    [([1], [1], 1, 1), ([3, 4], [5], 2, 1), ([10] * 3, [10] * 2, 7, 3), ([2] * 40, [3] * 30, 9, 2),
     ([100] * 6, [100] * 6, MAX_REPETITIONS, 5)],
)
def test_count_cells_is_arithmetic(sizes, algo_sizes, reps, experiments):
    suite = parse_suite(_grid_suite(sizes, algo_sizes, reps, experiments))
    start = time.perf_counter()
    total = count_cells(suite)
    assert time.perf_counter() - start < 0.1
    assert total == experiments * math.prod(sizes) * (math.prod(algo_sizes) + 1) * reps
    assert count_cells(suite, seeds=1) == total // reps


def test_count_cells_matches_what_resolve_expands(fresh_plugins):
    text = BASE.replace("params: {lr: 0.1}", "grid: {lr: [0.1, 0.2, 0.3]}") \
        .replace("repetitions: 2", "repetitions: 4\nquick: {repetitions: 1}")
    suite = parse_suite(text)
    for quick, seeds in [(False, None), (True, None), (False, 3), (True, 6)]:
        resolved = resolve(suite, quick=quick, seeds=seeds)
        expanded = sum(len(e.datasets) * len(e.algorithms) * e.repetitions for e in resolved)
        assert count_cells(suite, quick=quick, seeds=seeds) == expanded


@pytest.mark.parametrize(
    "sizes,algo_sizes,reps",
    [([1000] * 2, [1], 1), ([10] * 3, [10] * 3, 1), ([50] * 40, [1], 1), ([1], [1], 200_000),
     ([2] * 20, [3] * 20, MAX_REPETITIONS)],
)
def test_huge_suites_are_refused_before_expansion(monkeypatch, sizes, algo_sizes, reps):
    import moebench.suite.resolution as suite_module

    def no_expansion(*args, **kwargs):
        raise AssertionError("a grid was expanded")

    monkeypatch.setattr(suite_module, "_expand", no_expansion)
    suite = parse_suite(_grid_suite(sizes, algo_sizes, reps), "s.yaml")
    total = count_cells(suite)
    assert total > MAX_CELLS_WITHOUT_CONFIRMATION
    with pytest.raises(SuiteError) as info:
        resolve(suite, "s.yaml", max_cells=MAX_CELLS_WITHOUT_CONFIRMATION)
    ((where, message),) = info.value.problems
    assert f"{total:,} cells" in message and where.startswith("experiments[0] (line")
    if total <= MAX_CELLS:
        assert "pass --yes to run it anyway" in message
    else:
        assert f"no suite may have more than {MAX_CELLS:,} cells" in message
        # Even unconfirmed-limit-free, such a suite is never expanded.
        with pytest.raises(SuiteError, match="no suite may have more than"):
            resolve(suite, "s.yaml")


def test_max_cells_is_a_limit_only_when_given(fresh_plugins):
    suite = parse_suite(BASE, "s.yaml")  # 2 datasets x 2 algorithms x 2 repetitions
    assert count_cells(suite) == 8
    resolve(suite)
    resolve(suite, max_cells=8)
    ((where, message),) = resolve_problems(BASE, max_cells=7)
    assert message.startswith("the suite has 8 cells, more than 7") and "--yes" in message
    assert where.startswith("(top level) (line 1)")
    resolve(suite, max_cells=4, seeds=1)
    resolve(suite, "s.yaml", False, None)  # positional parameters are unchanged


@pytest.mark.parametrize("path,text", [
    ("repetitions", "repetitions: 2"),
    ("quick.repetitions", "quick: {repetitions: 2}"),
    ("experiments[0].repetitions", "experiments: [{name: e, repetitions: 2, "
     "datasets: [{name: synthetic-moe}], algorithms: [{name: gd}]}]"),
])
@pytest.mark.parametrize("value", [MAX_REPETITIONS + 1, 10**18, 10**100])
def test_absurd_repetitions_fail_validation_with_the_field(path, text, value):
    base = "name: x\n" + ("datasets: [{name: synthetic-moe}]\nalgorithms: [{name: gd}]\n"
                          if "experiments" not in text else "")
    where, message = refused(base + text.replace("2", str(value), 1) + "\n")
    assert where.startswith(f"{path} (line") and "less than or equal to 1000000" in message


def test_many_duplicate_ids_are_checked_in_linear_time(fresh_plugins):
    # 40,000 equal ids: a quadratic check (ids.count inside a loop) takes about 15 s here.
    n = 40_000
    text = BASE.replace("params: {lr: 0.1}", f"grid: {{lr: [{', '.join(['0.1'] * n)}]}}")
    start = time.perf_counter()
    problems = resolve_problems(text)
    assert time.perf_counter() - start < 10
    assert problems == [("algorithms (line 9)",
                         "two entries have the id 'gd[lr=0.1]'; give them distinct labels")]


def test_one_bad_grid_value_is_reported_once_and_problem_lists_are_bounded(fresh_plugins):
    text = BASE.replace("params: {lr: 0.1}", "grid: {lr: [0.1, bad, 0.3], tol: [1, 2, 3, 4]}")
    problems = resolve_problems(text)
    assert [w for w, _ in problems] == ["algorithms[1].grid.lr[1] (line 12)"]
    values = ", ".join(f"bad{i}" for i in range(500))
    problems = resolve_problems(BASE.replace("params: {lr: 0.1}", f"grid: {{lr: [{values}]}}"))
    assert len(problems) == 101 and problems[-1] == ("...", "400 more problems not shown")


# --------------------------------------------------------------------------------------------
# 3. Suite names cannot leave the output folder


BAD_NAMES = [".", "..", "...", "....", ".hidden", "-rf", "_x", "a/b", "../x", "a\\b", "/abs",
             "", " x", "x ", "x\n", "x\ty", "é", "a:b", "C:", "x" * 101, "~", "$HOME"]
GOOD_NAMES = ["a", "0", "smoke", "paper-2026", "a.b_c-d", "x" * 100, "1..2"]


def _named(name: str) -> str:
    quoted = json.dumps(name)  # a YAML double-quoted scalar
    return f"name: {quoted}\ndatasets: [{{name: d}}]\nalgorithms: [{{name: a}}]\n"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_suite_names_are_refused(name):
    where, message = refused(_named(name))
    assert where == "name (line 1)"
    assert "must start with a letter or digit" in message and "results folder" in message


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_safe_suite_names_stay_inside_the_output_folder(tmp_path, name):
    suite = parse_suite(_named(name))
    target = (tmp_path / suite.name).resolve()
    assert target.parent == tmp_path.resolve() and target.name == name


# --------------------------------------------------------------------------------------------
# 4. Non-finite floats


NON_FINITE = [".inf", "-.inf", ".nan", ".NaN", "+.Inf", "1e400", "-1e999"]


def _float_fields(cls: type) -> list[str]:
    out = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        args = set(typing.get_args(ann)) if typing.get_args(ann) else {ann}
        if float in args:
            out.append(name)
    return out


def test_every_float_parameter_of_every_plugin_rejects_inf_and_nan(fresh_plugins):
    checked = 0
    for kind in ("algorithms", "datasets", "models", "metrics", "devices"):
        for name, cls in plugins.components(kind).items():
            params = cls.Params
            assert issubclass(params, Params)
            for field in _float_fields(params):
                default = params.model_fields[field].default
                assert default is None or not isinstance(default, float) or \
                    math.isfinite(default), f"{kind} {name}.{field} has a non-finite default"
                for value in (math.inf, -math.inf, math.nan):
                    with pytest.raises(pydantic.ValidationError) as info:
                        params.model_validate({field: value})
                    errors = [e for e in info.value.errors() if e["loc"][:1] == (field,)]
                    assert errors and all(e["type"] == "finite_number" for e in errors), \
                        (kind, name, field, errors)
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize(
    "old,new,path",
    [
        ("{lr: 0.1}", "{lr: {v}}", "algorithms[1].params.lr"),
        ("{lr: 0.1}", "{lr: 0.1}\n    grid: {tol: [0.1, {v}]}", "algorithms[1].grid.tol[1]"),
        ("{lr: 0.1}", "{lr: 0.1}\n    quick: {lr: {v}}", "algorithms[1].quick.lr"),
        ("sigma: 0.3}", "sigma: {v}}", "datasets[0].params.sigma"),
        ("sigma: 0.3}", "sigma: 0.3}\n    model: {name: regression-moe, params: {sigma: {v}}}",
         "datasets[0].model.params.sigma"),
    ],
)
def test_non_finite_plugin_parameters_name_their_field(fresh_plugins, value, old, new, path):
    text = BASE.replace(old, new.replace("{v}", value))
    problems = resolve_problems(text, quick="quick" in new)
    assert problems == [(f"{path} (line {line_of(problems[0][0])})",
                         "Input should be a finite number")]


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize(
    "snippet,path",
    [
        ("budget: {timeout: {v}}", "budget.timeout"),
        ("init: {scheme: random, scale: {v}}", "init.scale"),
        ("init: {scheme: near-truth, radius: {v}}", "init.radius"),
        ("experiments: [{name: e, datasets: [{name: d}], algorithms: [{name: a}], "
         "reference: {source: s, values: [{dataset: d, algorithm: a, metric: m, mean: {v}}]}}]",
         "experiments[0].reference.values[0].mean"),
        ("experiments: [{name: e, datasets: [{name: d}], algorithms: [{name: a}], "
         "reference: {source: s, values: [{dataset: d, algorithm: a, metric: m, mean: 1, "
         "std: {v}}]}}]", "experiments[0].reference.values[0].std"),
    ],
)
def test_non_finite_suite_floats_name_their_field(value, snippet, path):
    body = snippet.replace("{v}", value)
    single = "" if "experiments" in body else "datasets: [{name: d}]\nalgorithms: [{name: a}]\n"
    where, message = refused(f"name: x\n{single}{body}\n")
    assert where.startswith(path + " (line") and message == "Input should be a finite number"
