"""Reading a suite file: UTF-8 bytes, then bounded YAML, then the strict schema.

:func:`load_suite` reads a file and :func:`parse_suite` its text; every mistake (bytes that are
not UTF-8, malformed YAML, YAML beyond the loader's limits, unknown keys, wrong types) becomes a
:class:`SuiteError` naming its YAML path and line, before anything runs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..errors import SuiteError
from .bounded_yaml import YamlRefused, load_yaml
from .problems import Problems, unknown_key, validation_message
from .schema import EXTENSION_PREFIX, Suite, form_problem, keys_at, without_figure_kind


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text of a suite file, or a SuiteError naming the line and byte of the bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SuiteError(
            [(f"line {line}", f"not UTF-8 text: {exc.reason} (byte 0x{data[exc.start]:02x}) "
              f"at byte {exc.start}; save the file as UTF-8")],
            source,
        ) from None


def _unknown_key(loc: tuple[object, ...]) -> str:
    """What to say of the key at ``loc`` that the schema refuses: a "did you mean" and the
    keys valid at that level (at the top level also that ``x-`` keys are ignored)."""
    name = loc[-1] if loc else "?"
    note = f"; {EXTENSION_PREFIX}* keys are ignored" if len(loc) == 1 else ""
    return unknown_key(name, keys_at(loc[:-1]), note)


def parse_suite(text: str | bytes, source: str = "<suite>") -> Suite:
    """Parse YAML text into a :class:`Suite` (structure and types only).

    Parameters
    ----------
    text
        The suite's YAML, as text or as UTF-8 bytes.
    source
        File name used in error messages.

    Returns
    -------
    Suite
        The validated suite; plugin names and parameters are checked by :func:`resolve`.

    Raises
    ------
    SuiteError
        For bytes that are not UTF-8, malformed YAML, YAML beyond the loader's limits (nesting,
        aliases, size), duplicate keys, unknown keys and wrong types, each with its YAML path
        and line (for a value from an anchor, the line of the alias that uses it, then the
        anchor's name and the value's line in it).
    """
    if isinstance(text, bytes):
        text = _decode(text, source)
    try:
        raw, lines = load_yaml(text)
    except YamlRefused as exc:
        raise SuiteError([(exc.where, exc.message)], source) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, a position
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        problem = str(exc).split("\n")[0]
        raise SuiteError([(f"line {line}, column {column}", f"malformed YAML: {problem}")],
                         source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(parse)"
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and getattr(exc, "problem", None):
            problem = f"{context}, {problem}"
        raise SuiteError([(where, f"malformed YAML: {problem}")], source) from None
    if not isinstance(raw, dict):
        what = "an empty document" if raw is None else f"a {type(raw).__name__}"
        raise SuiteError([(f"(top level) (line {lines.get((), 1)})",
                           f"a suite must be a YAML mapping (name: ..., ...), not {what}")],
                         source)
    problems = Problems(source, lines)
    try:
        suite = Suite.model_validate(raw)
        suite._lines = lines
        return suite
    except ValidationError as exc:
        for err in exc.errors():
            msg = validation_message(err)
            loc = without_figure_kind(tuple(err["loc"]))
            if err["type"] == "extra_forbidden":
                msg = _unknown_key(tuple(err["loc"]))  # the figure's kind picks its keys
            elif err["type"] == "missing":
                msg = "required field is missing"
            problems.add(loc, msg)
        if all(err["loc"] for err in exc.errors()):  # pydantic skipped the check of the form
            form = form_problem(*(raw.get(k) is not None
                                  for k in ("datasets", "algorithms", "experiments")))
            if form:
                problems.add((), f"Value error, {form}")
        problems.raise_if_any()
        raise


#: What a path that is not a regular file is, by the test of :mod:`stat` that says so.
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISSOCK, "a socket"))


def _not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a suite file without opening it, or ``None``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"no such suite file: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    return f"{path} is not a regular file: {kind}"


def load_suite(path: str | Path) -> Suite:
    """Read and parse a suite file; the error says which file is missing or unreadable.

    Parameters
    ----------
    path
        The suite file (UTF-8 YAML).

    Returns
    -------
    Suite
        As :func:`parse_suite` returns it.

    Raises
    ------
    SuiteError
        If the file is missing, not a regular file (a folder, a device, a FIFO: said without
        opening it, which could wait forever), unreadable, not UTF-8 or not a valid suite.
    """
    path = Path(path)
    kind = _not_a_regular_file(path)
    if kind:
        raise SuiteError([("(file)", kind)], str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError([("(file)", f"cannot read {path}: {exc.strerror or exc}")],
                         str(path)) from None
    return parse_suite(data, str(path))
