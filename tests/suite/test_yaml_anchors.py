"""Errors in values that come from YAML anchors name the line where the suite uses them.

A typo inside an anchor (``&name``) reused through aliases (``*name``, ``<<: *name``) fails in
every experiment that uses it; each message names the alias's line in that experiment and adds
the anchor the text is in, with the typo's own line.
"""

from __future__ import annotations

import time

import pytest

from moebench.errors import SuiteError
from moebench.suite import parse_suite, resolve, yaml_lines
from moebench.suite.bounded_yaml import load_yaml
from moebench.suite.problems import Place

DATASETS = """\
    datasets:
      - name: synthetic-moe
        params: {n: 100, d: 3, k: 2}
"""


def suite_of(*experiments: str) -> str:
    """A suite whose experiments hold the given ``algorithms:`` blocks (two-space indent)."""
    text = "name: anchors\nseed: 1\nrepetitions: 1\nexperiments:\n"
    for i, algorithms in enumerate(experiments):
        text += f"  - name: e{i}\n" + DATASETS + "    algorithms:\n" + algorithms
    return text


def line_with(text: str, fragment: str, occurrence: int = 0) -> int:
    """The 1-based line of the ``occurrence``-th line of ``text`` containing ``fragment``."""
    found = [i + 1 for i, line in enumerate(text.splitlines()) if fragment in line]
    return found[occurrence]


def problems(text: str) -> list[tuple[str, str]]:
    """The problems that parsing then resolving ``text`` reports."""
    with pytest.raises(SuiteError) as info:
        resolve(parse_suite(text, "s.yaml"), "s.yaml")
    return info.value.problems


def lrr_problems(text: str) -> dict[str, str]:
    """The ``where`` of each problem about the parameter typo ``lrr``, by its YAML path."""
    found = {}
    for where, message in problems(text):
        if where.split(" ")[0].endswith(".lrr"):
            assert "unknown parameter 'lrr' of algorithm 'gd'; did you mean 'lr'?" in message
            found[where.split(" ")[0]] = where
    return found


MERGED = suite_of(
    "      - name: gd\n"
    "        params: &defaults {lr: 0.1, lrr: 2}\n",
    "      - name: gd\n"
    "        params:\n"
    "          <<: *defaults\n"
    "          optimizer: sgd\n",
    "      - name: gd\n"
    "        params:\n"
    "          optimizer: adam\n"
    "          <<: *defaults\n",
)


def test_a_merged_typo_is_reported_at_each_merge_with_its_anchor():
    anchor = line_with(MERGED, "&defaults")
    found = lrr_problems(MERGED)
    assert found == {
        "experiments[0].algorithms[0].params.lrr":
            f"experiments[0].algorithms[0].params.lrr (line {anchor})",
        "experiments[1].algorithms[0].params.lrr":
            f"experiments[1].algorithms[0].params.lrr (line {line_with(MERGED, '<<', 0)}, "
            f"from the anchor &defaults at line {anchor})",
        "experiments[2].algorithms[0].params.lrr":
            f"experiments[2].algorithms[0].params.lrr (line {line_with(MERGED, '<<', 1)}, "
            f"from the anchor &defaults at line {anchor})",
    }


WHOLE_ENTRY = suite_of(
    "      - &gd\n"
    "        name: gd\n"
    "        params: &p\n"
    "          lr: 0.1\n"
    "          lrr: 0.1\n",
    "      - name: joint-em\n"
    "      - *gd\n",
    "      - *gd\n"
    "      - name: gd\n"
    "        label: gd-2\n"
    "        params: *p\n",
)


def test_an_aliased_entry_is_reported_at_each_use_site():
    typo = line_with(WHOLE_ENTRY, "lrr:")
    uses = [line_with(WHOLE_ENTRY, "*gd", i) for i in range(2)]
    found = lrr_problems(WHOLE_ENTRY)
    assert found == {
        "experiments[0].algorithms[0].params.lrr":
            f"experiments[0].algorithms[0].params.lrr (line {typo})",
        "experiments[1].algorithms[1].params.lrr":
            f"experiments[1].algorithms[1].params.lrr (line {uses[0]}, "
            f"from the anchor &gd at line {typo})",
        "experiments[2].algorithms[0].params.lrr":
            f"experiments[2].algorithms[0].params.lrr (line {uses[1]}, "
            f"from the anchor &gd at line {typo})",
        "experiments[2].algorithms[1].params.lrr":
            f"experiments[2].algorithms[1].params.lrr (line {line_with(WHOLE_ENTRY, '*p')}, "
            f"from the anchor &p at line {typo})",
    }


def test_schema_errors_in_an_aliased_entry_name_each_use():
    text = suite_of(
        "      - &gd {name: gd, parms: {lr: 0.1}}\n",
        "      - *gd\n",
    )
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "s.yaml")
    wheres = sorted(where for where, message in info.value.problems
                    if message.startswith("unknown key"))
    assert wheres == [
        f"experiments[0].algorithms[0].parms (line {line_with(text, '&gd')})",
        f"experiments[1].algorithms[0].parms (line {line_with(text, '*gd')}, "
        f"from the anchor &gd at line {line_with(text, '&gd')})",
    ]


def test_nested_aliases_name_the_outer_use_and_the_inner_anchor():
    text = (
        "base: &base {lr: 1}\n"
        "mid: &mid\n"
        "  <<: *base\n"
        "  tol: 0\n"
        "top:\n"
        "  - *mid\n"
        "  - {<<: [*mid, *base], lr: 2}\n"
    )
    _, places = load_yaml(text)
    assert places[("mid", "lr")] == Place(3, "base", 1)
    assert places[("mid", "tol")] == Place(4)
    assert places[("top", 0)] == Place(6, "mid", 2)  # &mid is on line 2
    assert places[("top", 0, "lr")] == Place(6, "base", 1)
    assert places[("top", 0, "tol")] == Place(6, "mid", 4)
    assert places[("top", 1, "lr")] == Place(7)  # its own key overrides the merged ones
    assert places[("top", 1, "tol")] == Place(7, "mid", 4)
    assert ("top", 1, "<<") not in places
    assert yaml_lines(text)[("top", 0, "tol")] == 6


def test_the_merge_order_follows_yaml():
    # In "<<: [*a, *b]" the first mapping wins; of two "<<" keys, the data keeps the last.
    text = "a: &a {x: 1}\nb: &b {x: 2, y: 3}\nc: {<<: [*a, *b]}\n"
    data, places = load_yaml(text)
    assert data["c"] == {"x": 1, "y": 3}
    assert places[("c", "x")] == Place(3, "a", 1)
    assert places[("c", "y")] == Place(3, "b", 2)


def test_the_place_map_of_a_suite_at_the_alias_limits_is_quick():
    # 400 uses of an anchor of about 200 values: near MAX_YAML_NODES once expanded.
    inner = ", ".join(f"k{i}: {i}" for i in range(100))
    text = f"a: &a {{{inner}}}\nuses:\n" + "".join("  - *a\n" for _ in range(400))
    start = time.perf_counter()
    lines = yaml_lines(text)
    assert time.perf_counter() - start < 2.0
    assert lines[("uses", 399, "k99")] == 402
    assert lines[("a", "k0")] == 1


SHARED = """\
x-step-sizes: &gd-params {lr: 0.1, lrr: 2}
name: shared
experiments:
  - name: small
    metrics: [param_error]
    datasets:
      - {name: synthetic-moe, params: {n: 200, d: 5, k: 2}}
    algorithms:
      - {name: gd, params: *gd-params}
  - name: large
    metrics: [param_error]
    datasets:
      - {name: synthetic-moe, params: {n: 200, d: 5, k: 2}}
    algorithms:
      - name: gd
        params: {<<: *gd-params, lr: 0.05}
"""


def test_x_keys_hold_shared_anchors_and_their_typos_name_each_use(fresh_plugins):
    """Top-level ``x-`` keys are not settings (docker-compose's convention): a place for the
    anchors that experiments share; a typo there is reported where each experiment uses it."""
    assert problems(SHARED) == [
        ("experiments[0].algorithms[0].params.lrr (line 9, from the anchor &gd-params at "
         "line 1)", "unknown parameter 'lrr' of algorithm 'gd'; did you mean 'lr'? (valid: lr, "
         "optimizer, batch_size, tol)"),
        ("experiments[1].algorithms[0].params.lrr (line 16, from the anchor &gd-params at "
         "line 1)", "unknown parameter 'lrr' of algorithm 'gd'; did you mean 'lr'? (valid: lr, "
         "optimizer, batch_size, tol)")]
    fixed = resolve(parse_suite(SHARED.replace(", lrr: 2", ""), "s.yaml"), "s.yaml")
    assert [e.algorithms[0].params["lr"] for e in fixed] == [0.1, 0.05]
    # only the x- prefix is excused: another unknown top-level key still fails, by name
    with pytest.raises(SuiteError, match=r"y-step-sizes \(line 1\)"):
        parse_suite(SHARED.replace("x-step", "y-step"), "s.yaml")
