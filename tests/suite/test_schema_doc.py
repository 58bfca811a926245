"""README.md documents every suite key, generated from the pydantic models."""

from __future__ import annotations

from pathlib import Path

from moebench.suite import Suite
from moebench.suite.schema_doc import END, START, replace_block, suite_keys_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_suite_key_as_generated():
    text = README.read_text()
    assert START in text and END in text
    assert replace_block(text, suite_keys_markdown()) == text, (
        "README.md's suite keys are out of date: run "
        "`python -m moebench.suite.schema_doc --write README.md`")


def test_every_model_and_field_is_documented():
    block = suite_keys_markdown()
    for name in Suite.model_fields:
        assert f"| `{name}` |" in block
    for model in ("Budget", "Experiment", "Reference", "ReferenceValue", "Claim", "Figure",
                  "Quick", "InitSpec", "ModelChoice", "DatasetEntry", "AlgorithmEntry"):
        assert f"**`{model}`**" in block
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    assert all(not line.rstrip().endswith("|  |") for line in rows), "a key without meaning"
