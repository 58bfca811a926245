"""Labels set into REPRODUCTION.md stay in their table cell and never become HTML."""

from __future__ import annotations

import textwrap

import pytest
from markdown_it import MarkdownIt

from moebench.reports.markdown_text import markdown_cell
from moebench.runner import run_suite
from moebench.suite import parse_suite

HOSTILE = ["a | b <img src=x onerror=alert(1)>\n# heading", "back\\|slash", "R&D &lt;",
           "line\r\nbreaks\u2028here", "ends with \\"]


def render_row(cell: str) -> str:
    """The HTML of a two-column table whose first cell is ``cell``."""
    return MarkdownIt("commonmark").enable("table").render(
        f"| h1 | h2 |\n|---|---|\n| {cell} | z |\n")


@pytest.mark.parametrize("text", HOSTILE)
def test_a_cell_renders_as_its_text_in_one_cell(text):
    cell = markdown_cell(text)
    assert "\n" not in cell and "\r" not in cell
    html = render_row(cell)
    assert html.count("<td>") == 2 and "<h1>" not in html and "<img" not in html
    shown = html.split("<td>")[1].split("</td>")[0]
    written = " ".join(text.replace("\r\n", "\n").replace("\u2028", "\n").split("\n"))
    assert shown == written.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_plain_labels_are_unchanged():
    assert markdown_cell("gd[lr=0.1,optimizer=adam]") == "gd[lr=0.1,optimizer=adam]"


SUITE = """
name: hostile-labels
repetitions: 1
budget: {max_iter: 3}
experiments:
  - name: "<i>exp</i> | one"
    reference:
      source: "Paper | <script>x</script>"
      claims:
        - {text: "<b>a</b> | beats b", better: "gd | <b>fast</b>", than: joint-em,
           metric: train_nll}
    datasets:
      - name: synthetic-moe
        label: "data | <u>set</u>"
        params: {n: 60, n_test: 20, d: 3, k: 2}
    algorithms:
      - name: joint-em
      - name: gd
        label: "gd | <b>fast</b>"
"""


def test_reproduction_keeps_hostile_labels_in_their_cells(fresh_plugins, tmp_path):
    directory = run_suite(parse_suite(textwrap.dedent(SUITE)), tmp_path)
    report = (directory / "REPRODUCTION.md").read_text()
    html = MarkdownIt("commonmark").enable("table").render(report)
    for tag in ("<i>", "<b>", "<u>", "<script>"):
        assert tag not in html
    assert "<h2>&lt;i&gt;exp&lt;/i&gt; | one</h2>" in html
    tables = html.split("<table>")[1:]
    assert len(tables) >= 2  # the claims and the leaderboard
    for table in tables:  # every row has as many cells as its table has columns
        head, *rows = table.split("<tr>")[1:]
        assert rows and all(row.count("<td>") == head.count("<th>") for row in rows)
    assert "<td>gd | &lt;b&gt;fast&lt;/b&gt;</td>" in html
    assert "<td>&lt;b&gt;a&lt;/b&gt; | beats b</td>" in html


def test_leaderboard_and_failures_keep_hostile_labels_in_their_cells(fresh_plugins, tmp_path):
    """leaderboard.md and failures.md take the same labels: no tag, no broken row."""
    text = textwrap.dedent(SUITE).replace("params: {n: 60, n_test: 20, d: 3, k: 2}",
                                          "params: {n: 60, n_test: 20, d: 3, k: 2}\n"
                                          "      - name: table\n"
                                          "        label: \"missing | <b>file</b>\"\n"
                                          "        params: {path: /nonexistent.csv, target: y}")
    directory = run_suite(parse_suite(text), tmp_path)
    for name, least in (("leaderboard.md", 2), ("failures.md", 1)):
        html = MarkdownIt("commonmark").enable("table").render((directory / name).read_text())
        assert "<b>" not in html and "<i>" not in html and "<u>" not in html, name
        tables = html.split("<table>")[1:]
        assert len(tables) >= least, name
        for table in tables:
            head, *rows = table.split("<tr>")[1:]
            assert rows and all(row.count("<td>") == head.count("<th>") for row in rows), name
        assert "missing | &lt;b&gt;file&lt;/b&gt;" in html, name
