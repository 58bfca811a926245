"""``moebench history``'s page: three commits of a suite drawn over commits, offline, escaped,
and rendering in a real (headless) browser; damaged entries skipped, an empty history explained.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap

import pandas as pd
import pytest

from moebench import plugins
from moebench.errors import MoebenchError
from moebench.history import DamagedEntry, History, publish
from moebench.runner import run_suite
from moebench.suite import parse_suite
from moebench.testing.browser import check_report, missing_reason

SUITE = """
name: timeline-test
seed: 3
repetitions: 2
budget: {max_iter: 5}
experiments:
  - name: small
    metrics: [param_error, train_nll]
    datasets:
      - name: synthetic-moe
        params: {n: 300, n_test: 50, d: 3, k: 2, sigma: 0.2}
    algorithms:
      - name: joint-em
      - name: gd
        params: {lr: 0.05}
"""
MACHINE = "ci-box"
#: (sha, commit time, subject, factor applied to the times, drop gd's cells)
COMMITS = [
    ("a1" * 20, 1_700_000_000, "first commit", 1.0, False),
    ("b2" * 20, 1_700_086_400, "drop gd <script>alert('x')</script> & co", 1.0, True),
    ("c3" * 20, 1_700_172_800, "slow everything down", 3.0, False),
]


def _tamper(directory, factor: float, drop_gd: bool) -> None:
    """Scale the recorded times (a visible step) and/or remove gd's cells (a gap)."""
    path = directory / "results.parquet"
    frame = pd.read_parquet(path)
    for column in ("time", "cpu_time"):
        frame[column] = frame[column] * factor
    if drop_gd:
        frame = frame[frame["algorithm"] != "gd"]
    frame.to_parquet(path)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    plugins.reset_plugins()
    run = run_suite(parse_suite(textwrap.dedent(SUITE)), tmp_path_factory.mktemp("run"),
                    html_report=False)
    plugins.reset_plugins()
    store = History(tmp_path_factory.mktemp("history"))
    for sha, when, subject, factor, drop_gd in COMMITS:
        directory = store.parent_for(MACHINE, sha, []) / run.name
        shutil.copytree(run, directory)
        _tamper(directory, factor, drop_gd)
        store.record(directory, machine=MACHINE, commit=sha, commit_time=when,
                     subject=subject, options=[])
    return store


@pytest.fixture(scope="module")
def page(history, tmp_path_factory):
    return publish(history, tmp_path_factory.mktemp("page") / "history.html")


def _figures(html: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(
        r'<script type="application/json" id="data-fig-\d+">(.*?)</script>', html, re.S)]


def _medians(fig: dict) -> dict[str, list]:
    return {t["name"]: t["y"] for t in fig["data"] if t.get("mode") == "lines+markers"}


def test_the_page_draws_every_measure_over_the_three_commits(page):
    html = page.read_text()
    for sha, *_ in COMMITS:
        assert sha[:8] in html
    figures = _figures(html)
    titles = [f["layout"]["title"]["text"].split("<br>")[0] for f in figures]
    assert titles == ["time per iteration (cpu clock)", "param_error", "train_nll"]
    assert html.count('<div class="plot"') == 3
    time_fig = figures[0]
    assert time_fig["layout"]["yaxis"]["type"] == "log"
    assert time_fig["layout"]["yaxis"]["title"]["text"] == "seconds per iteration (cpu clock)"
    # every tick carries its unit (plotly's own minor log ticks read "8m", "700µ")
    ticks = time_fig["layout"]["yaxis"]["ticktext"]
    assert len(ticks) >= 2 and all(re.fullmatch(r"[\d.]+(s|ms|μs|ns)", t) for t in ticks), ticks
    assert time_fig["layout"]["xaxis"]["categoryarray"] == [c[0][:8] for c in COMMITS]
    assert "lower is better" in figures[1]["layout"]["title"]["text"]
    medians = _medians(time_fig)
    assert set(medians) == {"joint-em", "gd"}
    em = medians["joint-em"]
    assert em[2] == pytest.approx(3 * em[0], rel=1e-6)  # the step of the slowed-down commit
    assert medians["gd"][1] is None and medians["gd"][0] and medians["gd"][2]  # a gap
    # the commits table, the machine and how to regenerate
    assert "2023-11-14" in html and "ci-box" in html and "moebench history --history" in html
    assert "0/0 cells" not in html and "4/4 cells succeeded" in html
    assert "2/2 cells succeeded" in html  # the commit without gd


def test_the_page_escapes_text_and_needs_no_network(page):
    html = page.read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in html  # the table
    start = html.index("<script>")  # plotly.js: its own links are in its modebar's text
    ours = html[:start] + html[html.index("</script>", start):]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours)
    assert "<script src" not in html and "@import" not in html
    hover = [h for f in _figures(html) for t in f["data"] for h in t.get("hovertext", [])]
    assert any("&lt;script&gt;" in h for h in hover)  # plotly reads hover text as HTML
    assert not any("<script" in h for h in hover)
    data = html[html.index('<script type="application/json"'):]
    assert len(data) < 100_000  # summaries per commit, no iteration rows


@pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
def test_the_page_renders_in_headless_chromium(page, tmp_path):
    result = check_report(page, screenshots=tmp_path / "shots",
                          shots=[("history-top.png", None), ("history-plots.png", "div.plot")])
    assert result.problems == [], result.problems
    assert result.plots == 3 and result.empty_plots == []
    for shot in result.screenshots:
        assert shot.stat().st_size > 20_000  # a real picture, not a blank page


def test_a_damaged_entry_is_skipped_with_a_warning(history, tmp_path):
    store = History(tmp_path / "history")
    shutil.copytree(history.root, store.root)
    sha = "d4" * 20
    directory = store.parent_for(MACHINE, sha, []) / "timeline-test"
    shutil.copytree(store.parent_for(MACHINE, COMMITS[0][0], []) / "timeline-test", directory)
    store.record(directory, machine=MACHINE, commit=sha, commit_time=1_700_300_000,
                 subject="broken", options=[])
    (directory / "results.parquet").write_bytes(b"not a parquet file")
    (directory / "cells.jsonl").unlink()  # else the table is rebuilt from the cells
    with pytest.warns(DamagedEntry, match=r"d4d4d4d4.*delete that folder") as caught:
        page = publish(store, tmp_path)  # a folder: history.html in it
    assert str(directory) in str(caught[0].message)
    assert page.name == "history.html"
    html = page.read_text()
    assert COMMITS[2][0][:8] in html and sha[:8] not in html


def test_an_empty_history_says_how_to_fill_it(tmp_path, history):
    with pytest.raises(MoebenchError, match=r"no results in the history at .*compare-commits"):
        publish(History(tmp_path / "none"), tmp_path / "page.html")
    with pytest.raises(MoebenchError, match=r"of suite 'other'.*leave out --machine/--suite"):
        publish(history, tmp_path / "page.html", suite="other")


def test_the_history_folder_survives_damaged_entries(tmp_path):
    from moebench.history.database import DamagedEntry, variant_of

    root = History(tmp_path / "h")
    assert variant_of(["-e", "x", "--seeds", "6"]) == variant_of(["--seeds", "6", "-e", "x"])
    assert variant_of([]) == "default" != variant_of(["--seeds", "6"])
    good = root.parent_for("box one", "a" * 40, []) / "s"
    good.mkdir(parents=True)
    (good / "manifest.json").write_text('{"suite": "s", "state": "complete"}')
    root.record(good, machine="box one", commit="a" * 40, commit_time=5, subject="x",
                options=[])
    no_manifest = root.parent_for("box one", "b" * 40, []) / "s"
    no_manifest.mkdir(parents=True)
    (no_manifest / "entry.json").write_text(
        (good / "entry.json").read_text().replace("a" * 40, "b" * 40))
    null_time = root.parent_for("box one", "c" * 40, []) / "s"
    null_time.mkdir(parents=True)
    (null_time / "manifest.json").write_text("{}")
    (null_time / "entry.json").write_text(
        (good / "entry.json").read_text().replace('"commit_time": 5', '"commit_time": null'))
    with pytest.warns(DamagedEntry) as caught:
        entries = root.entries(machine="box one")  # the name as given, not as stored
    assert [e.commit for e in entries] == ["a" * 40]
    assert any("manifest.json is missing" in str(w.message) for w in caught)
    with pytest.warns(DamagedEntry):
        assert root.find("box one", "b" * 40, "s", []) is None
        assert root.find("box one", "a" * 40, "s", []).directory == good
