"""Text a suite shows in tables and reports: labels without control or format characters.

A label (an entry's ``label``, an experiment's ``name``, a figure's title, a claim) becomes a
cell of leaderboard.md, a heading of REPRODUCTION.md, a line of the terminal: a newline, a NUL
or a right-to-left override (U+202E) there breaks the table or reverses what the reader sees.
:data:`Label` refuses every character of Unicode category Cc (control) or Cf (format);
:data:`Text` (descriptions, notes: prose over several lines) allows newlines and tabs but not
the other control characters nor the direction controls.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

#: Characters that reorder the text around them (bidirectional embeddings, overrides,
#: isolates and marks): a reader sees something else than the bytes say ("Trojan Source").
DIRECTION_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                               "\u2066\u2067\u2068\u2069")

_CONTROL_NAMES = {"\0": "NUL", "\n": "newline", "\r": "carriage return", "\t": "tab",
                  "\x1b": "escape"}


def unprintable(text: str, *, prose: bool = False) -> str | None:
    """The first character of ``text`` a label must not hold, described; ``None`` if none.

    Parameters
    ----------
    text
        The label or text.
    prose
        Allow what prose over several lines needs: newlines, carriage returns and tabs, and
        format characters other than the direction controls (a soft hyphen, an emoji's
        zero-width joiner).

    Returns
    -------
    str | None
        ``"U+202E (RIGHT-TO-LEFT OVERRIDE) at position 3"`` (positions count from 1).
    """
    for position, char in enumerate(text, 1):
        category = unicodedata.category(char)
        if prose and (char in "\n\r\t" or (category == "Cf" and char not in DIRECTION_CONTROLS)):
            continue
        if category in ("Cc", "Cf"):
            name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "control character")
            return f"U+{ord(char):04X} ({name}) at position {position}"
    return None


def _label(value: str) -> str:
    found = unprintable(value)
    if found:
        raise PydanticCustomError(
            "label_character",
            "{found}: a label must not hold control or format characters (newlines, NUL, "
            "direction overrides): they break the tables and reports that show it",
            {"found": found},
        )
    return value


def _text(value: str) -> str:
    found = unprintable(value, prose=True)
    if found:
        raise PydanticCustomError(
            "text_character",
            "{found}: text must not hold control characters other than newlines and tabs, "
            "nor direction overrides: they garble the reports that show it",
            {"found": found},
        )
    return value


#: One line shown in tables and reports: no control or format characters.
Label = Annotated[str, AfterValidator(_label)]
#: Prose shown in reports: newlines and tabs, but no other control characters and no direction
#: controls.
Text = Annotated[str, AfterValidator(_text)]
