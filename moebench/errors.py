"""Exceptions raised by moebench, each carrying a message that says what to do."""

from __future__ import annotations


def describe_error(exc: BaseException) -> str:
    """``'ValueError: message'``: an exception as a cell's message or an output error shows it."""
    return f"{type(exc).__name__}: {exc}"


class MoebenchError(Exception):
    """Base class of every error moebench raises on purpose."""


class SuiteError(MoebenchError):
    """A suite file is malformed or refers to something that does not exist.

    Parameters
    ----------
    problems
        One ``(location, message)`` pair per problem; ``location`` is the YAML path of the bad
        field (``algorithms[1].params.step_size``), prefixed with the file name and line when known.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str = "<suite>"):
        self.problems = problems
        self.source = source
        lines = [f"invalid suite {source}:"] + [f"  {loc}: {msg}" for loc, msg in problems]
        super().__init__("\n".join(lines))


class PluginError(MoebenchError):
    """A plugin is unknown, failed to load, or registered something invalid."""


class DataError(MoebenchError):
    """Data is malformed: wrong shapes, NaN or infinite values, missing columns."""


class DataUnavailable(MoebenchError):
    """A dataset's files are not here; cells that need it are skipped with this reason."""


class UnsupportedProblem(MoebenchError):
    """An algorithm cannot fit the requested model family; its cells are skipped (reason)."""


class SchedulerError(MoebenchError):
    """``--scheduler`` names no Dask scheduler address, or no scheduler answers there."""
