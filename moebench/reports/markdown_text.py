"""Text from a suite or a run set into Markdown: a label cannot break a table or add HTML.

Labels, ids, claims and error messages come from suite files and plugins, which are untrusted:
``a | b`` would split a table cell, ``<img src=x onerror=...>`` would be HTML, and a newline
followed by ``# heading`` would end the table and start a heading.
"""

from __future__ import annotations

import re

_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")

#: What each character becomes: HTML entities for ``&``, ``<`` and ``>`` (a renderer shows the
#: character itself), a backslash escape for the ``|`` that would end a table cell and for the
#: backslash that would otherwise escape that escape (``a\|b``).
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|",
                          "\\": "\\\\"})


def markdown_cell(text: str) -> str:
    """``text`` as one Markdown table cell (or inline text) that renders as written.

    Parameters
    ----------
    text
        A label, id, claim or message (any string).

    Returns
    -------
    str
        ``text`` on one line (each run of line breaks becomes one space), with ``|`` and
        ``\\`` escaped by a backslash and ``&``, ``<``, ``>`` as HTML entities:
        ``a | b <img>`` gives ``a \\| b &lt;img&gt;``.
    """
    return _LINE_BREAKS.sub(" ", str(text)).translate(_ESCAPES)
