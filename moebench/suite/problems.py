"""Every mistake of a suite, with its YAML path and line, gathered into one :class:`SuiteError`."""

from __future__ import annotations

from typing import Any

from ..errors import SuiteError

#: At most this many problems are listed in one :class:`SuiteError` (then a count of the rest).
MAX_REPORTED_PROBLEMS = 100


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


class Problems:
    """The problems found in one suite so far, each named by its YAML path and line.

    Parameters
    ----------
    source
        File name used in the error.
    lines
        YAML path -> 1-based line of the suite file (empty when unknown).
    """

    def __init__(self, source: str, lines: dict[tuple[Any, ...], int]):
        self.source, self.lines, self.items = source, lines, []
        self._seen: set[tuple[str, str]] = set()

    def add(self, loc: tuple[Any, ...], message: str) -> None:
        """Record ``message`` at the YAML path ``loc`` (once: duplicates are dropped)."""
        where = format_loc(loc)
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                where += f" (line {self.lines[loc[:cut]]})"
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
