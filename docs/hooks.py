"""mkdocs hooks of the moebench docs site (``hooks:`` in mkdocs.yml).

The suite-key reference (``docs/suite-reference.md``) is regenerated from the pydantic models of
the suite schema on every build, so the site can never describe a schema that no longer exists.
The page keeps a checked-in copy of the block for readers on GitHub; ``tests/suite/
test_schema_doc.py`` fails when that copy is stale (``python -m moebench.suite.schema_doc --write
docs/suite-reference.md`` refreshes it).
"""

from __future__ import annotations

import re
from typing import Any

from moebench.suite.schema_doc import replace_block, suite_keys_markdown

#: A code span inside a Markdown table row.
_CODE_SPAN = re.compile(r"`[^`\n]+`")

#: The page whose ``<!-- suite-keys:start -->`` ... ``<!-- suite-keys:end -->`` block is generated.
SUITE_REFERENCE = "suite-reference.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the suite-key block of the reference page with one generated now.

    Parameters
    ----------
    markdown
        The page's Markdown source.
    page
        The mkdocs page being rendered.
    config, files
        The mkdocs configuration and files (unused).

    Returns
    -------
    str
        The Markdown to render: unchanged for every other page.
    """
    if page.file.src_uri != SUITE_REFERENCE:
        return markdown
    return replace_block(markdown, pipes_in_code_spans(suite_keys_markdown()))


def pipes_in_code_spans(markdown: str) -> str:
    """Unescape ``\\|`` inside code spans, for Python-Markdown's tables.

    GitHub needs a pipe inside a table cell escaped even within backticks, and drops the
    backslash; Python-Markdown keeps it there (a code span is literal) and already ignores
    pipes inside code spans when it splits a row into cells.

    Parameters
    ----------
    markdown
        Markdown written for GitHub.

    Returns
    -------
    str
        The same Markdown, with ``\\|`` inside code spans turned into ``|``.
    """
    return _CODE_SPAN.sub(lambda m: m.group(0).replace("\\|", "|"), markdown)
