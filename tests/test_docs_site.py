"""The README is a front page and the manual a docs site whose links, nav and excerpts hold.

What a reader meets first: README.md under 150 lines, opening with the two commands (`.ci/run`
runs the second); links that lead somewhere on GitHub and on the site; the tutorial's YAML
excerpts still in the suite files they quote; and the site building strictly and offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"

#: A Markdown link or image: ``[text](target)``.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: A fenced block following an ``<!-- excerpt: PATH -->`` marker: lines of PATH, in order.
EXCERPT = re.compile(r"<!-- excerpt: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)```", re.S)


def _relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # links in code are not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def _slug(heading: str) -> str:
    """The anchor GitHub and mkdocs give a heading (lower case, punctuation dropped)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def _nav_files(nav: list) -> list[str]:
    found = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        found += _nav_files(value) if isinstance(value, list) else [value]
    return found


def _pages() -> list[Path]:
    """The Markdown pages of docs/, without build outputs of the example package."""
    return [p for p in DOCS.rglob("*.md")
            if not any(part == "build" or part.endswith(".egg-info")
                       for part in p.relative_to(DOCS).parts)]


def _mkdocs_config() -> dict:
    return yaml.safe_load(MKDOCS.read_text())


def test_readme_is_a_front_page_that_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines: the manual belongs in docs/"
    start = lines.index("```bash")
    assert start <= 3, "the two commands come first"
    block = lines[start + 1:start + 5]
    assert block[0] == "# 1. install and run the main job"
    assert "pip install" in block[1] and "moebench run suites/paper.yaml" in block[1]
    assert block[2] == "# 2. install and run the tests"
    assert "pip install" in block[3] and block[3].endswith("pytest")
    assert lines[start + 5] == "```"


def test_ci_finds_the_test_command_in_the_readme():
    """`.ci/run` takes the line after '# 2. install and run the tests' (grep -m1 -A1)."""
    assert "grep -m1 -A1 '^# 2. install and run the tests' README.md" in (
        ROOT / ".ci" / "run").read_text()
    lines = README.read_text().splitlines()
    marker = next(i for i, line in enumerate(lines)
                  if line.startswith("# 2. install and run the tests"))
    assert "pytest" in lines[marker + 1]


def test_readme_says_what_a_new_user_needs():
    text = README.read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in text  # CPU-only machines
    tour = text.split("## A five-line tour", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = tour.strip().splitlines()
    assert len(commands) == 5
    for what in ("moebench run", "report.html", "moebench compare", "init-plugin",
                 "moebench plugins"):
        assert any(what in line for line in commands), what
    for library in ("pooch", "pebble", "loky", "Dask", "threadpoolctl", "plotly", "Jinja2",
                    "hypothesis", "pydantic", "pluggy"):
        assert library in text, f"README.md does not say why {library} (or not)"
    assert 'pip install -e ".[docs]"' in text and "mkdocs serve" in text


def test_every_relative_link_of_the_readme_resolves():
    links = _relative_links(README)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.exists(), f"README.md links to {link}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"README.md links to {link}: no such heading"


def test_every_docs_page_links_to_existing_files():
    for page in _pages():
        for link in _relative_links(page):
            target = link.partition("#")[0]
            if target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: {link}"


def test_the_nav_lists_every_page_and_only_existing_ones():
    config = _mkdocs_config()
    assert config["docs_dir"] == "docs"
    nav = _nav_files(config["nav"])
    for entry in nav:
        assert (DOCS / entry).is_file(), f"mkdocs.yml's nav names {entry}, which does not exist"
    pages = {p.relative_to(DOCS).as_posix() for p in _pages()}
    assert pages <= set(nav), f"pages missing from the nav: {sorted(pages - set(nav))}"
    for page in ("index.md", "suite-reference.md", "cli.md", "execution.md", "report.md",
                 "plugins.md", "architecture.md", "performance.md", "regression-tracking.md"):
        assert page in nav


def test_the_site_needs_no_network():
    config = _mkdocs_config()
    assert config["theme"]["font"] is False, "web fonts would be fetched from Google"
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config.get("plugins", [])]
    assert set(plugins) <= {"search"}, f"plugins that may fetch things: {plugins}"
    assert config["strict"] is True
    for hook in config["hooks"]:
        assert (ROOT / hook).is_file()


def test_the_tutorial_excerpts_are_still_in_the_suites():
    found = list(EXCERPT.finditer((DOCS / "index.md").read_text()))
    assert {m["path"] for m in found} >= {"suites/smoke.yaml", "suites/paper.yaml"}
    for m in found:
        lines = iter((ROOT / m["path"]).read_text().splitlines())
        for quoted in m["body"].splitlines():  # in order, possibly skipping lines between
            assert any(line == quoted for line in lines), (
                f"docs/index.md quotes {m['path']} as it no longer is: {quoted!r}")


def test_the_docs_state_the_rules_issue_20_asked_for():
    plugins = (DOCS / "plugins.md").read_text()
    execution = (DOCS / "execution.md").read_text()
    suites = (DOCS / "suites.md").read_text()
    # One rule for reported values: Python floats; only the runner converts 0-d tensors.
    for page in (plugins, execution):
        assert "one rule" in page and "Python float" in page and "0-d tensor" in page
    assert not re.search(r"0-d tensors become floats", plugins + execution + suites)
    # What one iteration is for mini-batch methods.
    for page in (plugins, suites):
        assert "One iteration is one pass over the training data" in page
        assert "epoch" in page
    # The model settings an algorithm needs, and the helpers with their signatures.
    assert "### The model's settings and the helpers you may reuse" in plugins
    for name in ("noise", "activation", "intercept", "fit_softmax_gate(", "relative_decrease("):
        assert name in plugins


@pytest.mark.skipif(shutil.which("mkdocs") is None and
                    not (Path(sys.executable).parent / "mkdocs").exists(),
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_site_builds_strictly_and_offline(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    command = [str(mkdocs) if mkdocs.exists() else "mkdocs", "build", "--strict",
               "--site-dir", str(tmp_path / "site")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr
    site = tmp_path / "site"
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, page
    cli = (site / "cli" / "index.html").read_text()
    assert "moebench run" in cli and "--resume" in cli  # generated from click
    keys = (site / "suite-reference" / "index.html").read_text()
    assert "memory_limit" in keys and "wall_timeout" in keys  # generated from the schema
