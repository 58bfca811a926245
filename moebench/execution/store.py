"""The result store: every finished cell on disk before the next one is reported.

Layout of ``<out>/<suite>/``:

- ``cells.jsonl``: one line per finished cell (its rows, each carrying the cell's ``key``),
  appended, flushed and fsync'ed by the supervising process as each cell is reported, whatever
  the number of workers. A partial last line left by a kill is ignored on read and cut off
  before the next append. When a key appears twice (a cell rerun by ``--resume``) the later
  line wins.
- ``manifest.json``: written when the run starts (``state: running``) and again at its end
  (``complete`` or ``interrupted``), always atomically (temporary file + rename).
- ``results.parquet``, ``leaderboard.csv``/``.md``, ``REPRODUCTION.md``, ``figures/``: derived
  from the cells at the end of a run. They are removed when a run starts in the folder, so a
  folder never mixes a new run's cells with an old run's tables.

The derived outputs describe the whole folder, not only the last run's selection: a run that
resumes into a folder (``--resume``, perhaps with ``-e/-a/-d`` or ``--seeds`` selecting part of
the suite, or after the suite changed) writes them from :meth:`ResultStore.folder_cells`: its
own cells, plus every finished cell of the earlier runs that it did not select (see
:meth:`ResultStore.earlier_cells`).

A folder that already holds results is never replaced silently: :class:`ResultStore` raises
:class:`ResultsExist` unless the caller resumes or overwrites.

moebench never writes through a symbolic link in the folder: a run stops before anything runs
when any of the files and folders it writes there (:data:`WRITTEN`) is a link, which would
have it append cells to, or replace, whatever the link points at (:func:`refuse_links`). The
results folder itself may be a link (results kept on another disk).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..cell.rows import clean_rows, rows_to_frame
from ..errors import MoebenchError
from .heartbeat import INFLIGHT_FOLDER

if TYPE_CHECKING:
    import pandas as pd

RESULTS_FILE = "results.parquet"
PARTIAL_FILE = "cells.jsonl"
MANIFEST_FILE = "manifest.json"
#: Files and folders computed from the cells at the end of a run.
DERIVED = ("results.parquet", "leaderboard.csv", "leaderboard.md", "REPRODUCTION.md",
           "failures.md", "figures", "report.html")

#: Everything a run writes in the results folder (the lock file is
#: :data:`moebench.execution.lock.LOCK_FILE`, which refuses a link itself).
WRITTEN = (PARTIAL_FILE, MANIFEST_FILE, *DERIVED, INFLIGHT_FOLDER)

#: Statuses of a cell that ``--resume`` keeps; ``error``, ``diverged`` and ``crashed`` cells
#: are run again.
REUSABLE = ("done", "max_iter", "timeout", "skipped")

Mode = Literal["new", "resume", "overwrite"]


class ResultsExist(MoebenchError):
    """The output folder already holds results of this suite."""


def cell_identity(rows: list[dict[str, Any]]) -> str:
    """A finished cell's key (older results without keys: its coordinates)."""
    last = rows[-1]
    key = last.get("key")
    if key:
        return str(key)
    return json.dumps([last.get(c) for c in ("experiment", "dataset", "algorithm",
                                             "repetition")], default=str)


def read_cell_lines(path: Path) -> tuple[list[list[dict[str, Any]]], int]:
    """The cells of a ``cells.jsonl`` and the byte length of its complete lines.

    A last line without its newline (the process was killed while writing it) is ignored; a
    line in the middle that is not valid JSON is skipped with a warning.
    """
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    cells: list[list[dict[str, Any]]] = []
    for number, line in enumerate(data[:good].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            warnings.warn(f"{path}: line {number} is not valid JSON; that cell is ignored "
                          "(run with --resume to compute it again)", stacklevel=2)
            continue
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            cells.append(rows)
    return cells, good


def cell_coordinates(rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    """``(experiment, dataset, algorithm, repetition)`` of a finished cell: where it sits in
    the tables, whatever the configuration that computed it."""
    last = rows[-1]
    return tuple(last.get(c) for c in ("experiment", "dataset", "algorithm", "repetition"))


def latest_cells(cells: Iterable[list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Cells by identity, the last line of each identity winning, in first-seen order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for rows in cells:
        found[cell_identity(rows)] = rows
    return found


def table_cells(cells: Iterable[list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The cells of a ``cells.jsonl`` as the folder's table holds them: the last line of each
    key (:func:`latest_cells`), and of several keys at the same coordinates (the same cell
    computed under another configuration) the one whose first line comes later.

    Returns
    -------
    dict
        Cell key -> rows, in the order of their first lines.
    """
    latest = latest_cells(cells)
    at = {cell_coordinates(rows): identity for identity, rows in latest.items()}
    keep = set(at.values())
    return {identity: rows for identity, rows in latest.items() if identity in keep}


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(directory: Path) -> None:
    """Create ``directory`` or say clearly why it cannot be written.

    Raises
    ------
    MoebenchError
        A parent is a file, or the folder cannot be created or written.
    """
    for parent in (directory, *directory.parents):
        if parent.exists() and not parent.is_dir():
            raise MoebenchError(f"cannot write results to {directory}: {parent} is a file, not a "
                                "folder; choose another --out")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        raise MoebenchError(f"cannot write results to {directory}: {exc.strerror or exc}; "
                            "choose another --out or fix its permissions") from None


def write_results_table(directory: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` to ``directory/results.parquet`` atomically (temporary file + rename).

    A column that mixes types is stored as text (with a warning) rather than losing the table.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(directory) / RESULTS_FILE
    try:
        _atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    except (ValueError, TypeError, ArithmeticError, ImportError) as exc:
        mixed = [c for c in frame.columns if frame[c].dtype == object]
        frame[mixed] = frame[mixed].astype("string")
        warnings.warn(f"results.parquet: columns {mixed} stored as text ({exc})", stacklevel=2)
        _atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return path


def refuse_links(directory: Path) -> None:
    """Stop when a file or folder a run writes in ``directory`` (:data:`WRITTEN`) is a
    symbolic link.

    Raises
    ------
    MoebenchError
        One line naming the link and where it points.
    """
    for name in WRITTEN:
        path = Path(directory) / name
        if path.is_symlink():
            raise MoebenchError(
                f"{path} is a symbolic link (to {os.readlink(path)}): moebench does not write "
                "through links in a results folder; remove the link or choose another --out")


class ResultStore:
    """Append-only store of one suite's results in ``directory``.

    Parameters
    ----------
    directory
        ``<out>/<suite name>``; created if needed.
    mode
        ``"new"`` refuses a folder that already holds results (:class:`ResultsExist`);
        ``"resume"`` keeps its cells (see :meth:`reusable`); ``"overwrite"`` deletes them.
    """

    def __init__(self, directory: str | Path, mode: Mode = "new"):
        self.directory = Path(directory)
        check_writable(self.directory)
        refuse_links(self.directory)
        self.partial = self.directory / PARTIAL_FILE
        self.manifest_path = self.directory / MANIFEST_FILE
        previous, good = read_cell_lines(self.partial)
        had_results = bool(previous) or self.manifest_path.is_file() or \
            (self.directory / RESULTS_FILE).is_file()
        if mode == "new" and had_results:
            raise ResultsExist(
                f"{self.directory} already holds results of this suite ({len(previous)} "
                "finished cells); run again with --resume to keep the finished cells and run "
                "the rest, or with --overwrite to discard them (or choose another --out)"
            )
        if mode == "overwrite":
            previous = []
            for name in (PARTIAL_FILE, MANIFEST_FILE):
                (self.directory / name).unlink(missing_ok=True)
        elif self.partial.is_file() and good < self.partial.stat().st_size:
            with self.partial.open("r+b") as fh:  # drop the partial line of a killed run
                fh.truncate(good)
        for name in DERIVED:
            path = self.directory / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.previous = latest_cells(previous)
        self.cells: dict[str, list[dict[str, Any]]] = {}
        #: identities of the cells computed by this run (not kept from a previous one)
        self.added: set[str] = set()

    def recorded_manifest(self) -> dict[str, Any]:
        """The manifest in the folder now (an earlier run's until this run writes its own);
        ``{}`` when there is none or it cannot be read."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

    def reusable(self, key: str) -> list[dict[str, Any]] | None:
        """The rows of a previous run's cell with this key, if ``--resume`` may keep it."""
        rows = self.previous.get(key)
        if rows is not None and rows[-1].get("status") in REUSABLE:
            return rows
        return None

    def keep(self, rows: list[dict[str, Any]]) -> None:
        """Count a previous run's cell (already on disk) as part of this run."""
        self.cells[cell_identity(rows)] = rows

    def append(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate one finished cell's rows and commit them to disk (flush + fsync).

        Returns
        -------
        list of dict
            The rows as stored (values coerced to storable types).
        """
        rows = clean_rows(rows)
        line = json.dumps(rows, default=str, allow_nan=True) + "\n"
        with self.partial.open("a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        identity = cell_identity(rows)
        self.cells[identity] = rows
        self.added.add(identity)
        return rows

    def earlier_cells(self) -> dict[str, list[dict[str, Any]]]:
        """The cells of earlier runs in the folder that this run did not report, which the
        folder's outputs still describe.

        Of the earlier lines of ``cells.jsonl`` (the last line of each key), whatever their
        status (an earlier error or crash stays in ``failures.md`` until a run that selects
        the cell computes it again); of several with the same coordinates (experiment,
        dataset, algorithm, repetition: the same cell computed under another configuration),
        the later one (by its key's first line); none at the coordinates of a cell of
        this run, which replaces it. Empty unless the store resumes a folder.

        Returns
        -------
        dict
            Cell key -> rows, in the order of ``cells.jsonl``.
        """
        taken = {cell_coordinates(rows) for rows in self.cells.values()}
        latest: dict[tuple[Any, ...], str] = {}
        for identity, rows in self.previous.items():
            if identity not in self.cells:
                latest[cell_coordinates(rows)] = identity
        keep = {identity for at, identity in latest.items() if at not in taken}
        return {k: rows for k, rows in self.previous.items() if k in keep}

    def folder_cells(self) -> dict[str, list[dict[str, Any]]]:
        """Every cell the folder's outputs describe: :meth:`earlier_cells`, then this run's
        cells (kept or computed), by key."""
        return {**self.earlier_cells(), **self.cells}

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row of this run's cells, cell by cell."""
        return [r for rows in self.cells.values() for r in rows]

    def finals(self, folder: bool = False) -> list[dict[str, Any]]:
        """The final row of each of this run's cells (``folder``: of :meth:`folder_cells`)."""
        cells = self.folder_cells() if folder else self.cells
        return [rows[-1] for rows in cells.values()]

    def frame(self) -> pd.DataFrame:
        """The tidy table of the folder: every row of :meth:`folder_cells`, cell by cell."""
        return rows_to_frame([r for rows in self.folder_cells().values() for r in rows])

    def write_table(self, frame: pd.DataFrame | None = None) -> Path:
        """Write ``results.parquet`` from the folder's cells (:meth:`frame`, atomically);
        ``frame``: that table when the caller has it already."""
        return write_results_table(self.directory, self.frame() if frame is None else frame)

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        """Write ``manifest.json`` atomically."""
        text = json.dumps(manifest, indent=2, default=str) + "\n"
        _atomic_write(self.manifest_path, lambda tmp: tmp.write_text(text))
        return self.manifest_path
