"""The docs site documents every suite key, generated from the pydantic models."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

from moebench.suite import Suite
from moebench.suite.schema import EXTENSION_PREFIX
from moebench.suite.schema_doc import END, START, replace_block, suite_keys_markdown

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "suite-reference.md"
HOOKS = ROOT / "docs" / "hooks.py"


def _hooks():
    spec = importlib.util.spec_from_file_location("moebench_docs_hooks", HOOKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_page_lists_every_suite_key_as_generated():
    text = REFERENCE.read_text()
    assert START in text and END in text
    assert replace_block(text, suite_keys_markdown()) == text, (
        "docs/suite-reference.md's suite keys are out of date: run "
        "`python -m moebench.suite.schema_doc --write docs/suite-reference.md`")


def test_site_build_regenerates_the_block_from_the_schema():
    """The mkdocs hook replaces a stale block: the site never shows an outdated schema."""
    hooks = _hooks()
    stale = f"# Every suite key\n\n{START}\n| `no_such_key` | int | - | gone |\n{END}\n"
    page = SimpleNamespace(file=SimpleNamespace(src_uri=hooks.SUITE_REFERENCE))
    rendered = hooks.on_page_markdown(stale, page, None, None)
    assert "no_such_key" not in rendered
    assert hooks.pipes_in_code_spans(suite_keys_markdown()) in rendered
    assert "`moebench list algorithms|datasets`" in rendered  # no backslash left on the site
    other = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    assert hooks.on_page_markdown(stale, other, None, None) == stale


def test_every_model_and_field_is_documented():
    block = suite_keys_markdown()
    for name in Suite.model_fields:
        assert f"| `{name}` |" in block
    for model in ("Budget", "Experiment", "Reference", "ReferenceValue", "Claim", "Figure",
                  "Quick", "InitSpec", "ModelChoice", "DatasetEntry", "AlgorithmEntry"):
        assert f"**`{model}`**" in block
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    assert all(not line.rstrip().endswith("|  |") for line in rows), "a key without meaning"


def test_the_reference_says_that_x_keys_are_ignored_and_links_to_the_anchors_section():
    block = suite_keys_markdown()
    top = block.split("**`")[0]  # the top level's table and what follows it
    assert f"Top-level keys starting with `{EXTENSION_PREFIX}` are ignored" in top
    assert "(suites.md#sharing-settings-with-yaml-anchors)" in top
    assert "\n### Sharing settings with YAML anchors\n" in (ROOT / "docs" / "suites.md").read_text()
    page = SimpleNamespace(file=SimpleNamespace(src_uri=_hooks().SUITE_REFERENCE))
    rendered = _hooks().on_page_markdown(REFERENCE.read_text(), page, None, None)
    assert f"keys starting with `{EXTENSION_PREFIX}` are ignored" in rendered
