"""Every mistake of a suite, with its YAML path and line, gathered into one :class:`SuiteError`."""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

from ..errors import SuiteError

#: At most this many problems are listed in one :class:`SuiteError` (then a count of the rest).
MAX_REPORTED_PROBLEMS = 100


def did_you_mean(name: str, choices: list[str] | set[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _with_valid(head: str, name: Any, valid: list[str], note: str = "") -> str:
    """``head`` (naming the unknown ``name``), a "did you mean" and the ``valid`` names."""
    hint = did_you_mean(str(name), valid)
    names = ", ".join(valid) or "(none)"
    return f"{head}{hint} (valid: {names}{note})" if hint else f"{head}; valid: {names}{note}"


def unknown_parameter(name: Any, owner: str, valid: list[str]) -> str:
    """The message of a parameter that ``owner`` (e.g. ``"algorithm 'gd'"``) does not have:
    ``unknown parameter 'lrr' of algorithm 'gd'; did you mean 'lr'? (valid: lr, tol)``."""
    return _with_valid(f"unknown parameter {str(name)!r} of {owner}", name, valid)


def unknown_key(name: Any, valid: list[str] | None, note: str = "") -> str:
    """The message of a key the suite's schema does not have where it is written.

    Parameters
    ----------
    name
        The key as written (``budgett``).
    valid
        The keys allowed there (:func:`moebench.suite.schema.keys_at`); ``None`` if unknown.
    note
        Said after the valid keys (the top level: that ``x-`` keys are ignored).

    Returns
    -------
    str
        ``unknown key 'budgett'; did you mean 'budget'? (valid: name, description, ...)``, or
        ``unknown key 'zzz'; valid: ...`` without a close match, or ``unknown key 'zzz' (check
        its spelling)`` where the valid keys are unknown.
    """
    if valid is None:
        return f"unknown key {str(name)!r} (check its spelling)"
    return _with_valid(f"unknown key {str(name)!r}", name, valid, note)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def validation_message(error: dict[str, Any]) -> str:
    """The message of one pydantic error of a suite value (an item of ``errors()``).

    Types are strict, so a quoted number (``lr: '0.1'``) is a string: the message then says
    so (``Input should be a valid number, not the string '0.1': write numbers without
    quotes``); of a word (``lr: fast``) it says that it is no number. Other errors keep
    pydantic's message.
    """
    message, value = error["msg"], error.get("input")
    if isinstance(value, str) and error["type"] in ("int_type", "float_type"):
        if not _is_number(value):  # 'fast': what pydantic says of it without strict types
            what = "an integer" if error["type"] == "int_type" else "a number"
            return f"{message}, unable to parse string as {what}"
        return f"{message}, not the string {value!r}: write numbers without quotes"
    if isinstance(value, str) and error["type"] == "bool_type":
        return f"{message}, not the string {value!r}: write true or false without quotes"
    if isinstance(value, bool) and error["type"] in ("int_type", "float_type"):
        return f"{message}, not {str(value).lower()}"
    return message


def format_loc(loc: tuple[Any, ...]) -> str:
    """A YAML path as text: ``experiments[0].algorithms[2].params`` (``(top level)`` if empty).

    Parameters
    ----------
    loc
        The path's keys (strings) and sequence positions (integers).

    Returns
    -------
    str
        The path as a suite author writes it.
    """
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class Place(NamedTuple):
    """Where a YAML path is written: its line, and the anchor its value comes from.

    A value reached through an alias (``key: *name``, ``- *name`` or a ``<<: *name`` merge)
    is placed at the alias, where the suite uses it (``line``); ``anchor`` and ``anchor_line``
    then say where its text is: inside the anchor ``&name``, at ``anchor_line``.
    """

    line: int
    anchor: str | None = None
    anchor_line: int | None = None

    def __str__(self) -> str:
        if self.anchor is None:
            return f"line {self.line}"
        return f"line {self.line}, from the anchor &{self.anchor} at line {self.anchor_line}"


class Problems:
    """The problems found in one suite so far, each named by its YAML path and line.

    Parameters
    ----------
    source
        File name used in the error.
    lines
        YAML path -> its 1-based line in the suite file, an ``int`` or a :class:`Place` (empty
        when unknown).
    """

    def __init__(self, source: str, lines: dict[tuple[Any, ...], int | Place]):
        self.source, self.lines, self.items = source, lines, []
        self._seen: set[tuple[str, str]] = set()

    def add(self, loc: tuple[Any, ...], message: str) -> None:
        """Record ``message`` at the YAML path ``loc`` (once: duplicates are dropped)."""
        where = format_loc(loc)
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                place = self.lines[loc[:cut]]
                where += f" ({place if isinstance(place, Place) else Place(place)})"
                break
        if (where, message) not in self._seen:  # a bad grid value fails in every grid point
            self._seen.add((where, message))
            self.items.append((where, message))

    def raise_if_any(self) -> None:
        """Raise a :class:`SuiteError` listing the problems recorded, if there are any."""
        if self.items:
            items = self.items[:MAX_REPORTED_PROBLEMS]
            if len(self.items) > MAX_REPORTED_PROBLEMS:
                items.append(("...", f"{len(self.items) - MAX_REPORTED_PROBLEMS} more problems "
                              "not shown"))
            raise SuiteError(items, self.source)

