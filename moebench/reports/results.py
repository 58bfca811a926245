"""Reading results folders written by ``moebench run``.

Layout of ``<out>/<suite>/`` (written by :mod:`moebench.execution.store`):

- ``cells.jsonl``: one line per finished cell (its rows), committed as each cell finishes, so
  an interrupted or crashing run loses nothing already computed;
- ``results.parquet``: the tidy table, written at the end (and on interruption): one row per
  recorded iteration (``record == "iteration"``) and one row per cell (``record == "final"``);
- ``manifest.json``: versions, device, git commit, command line, times, counts by status,
  ``state`` (``running``, ``complete`` or ``interrupted``), the metric each experiment ranks by
  (``rank_by``) and which way every metric computed is better (``metric_directions``).

A folder is loaded once into a :class:`RunResults`; everything that ranks, colours or decides
"wins" reads the metric directions recorded there, never the installed plugins.

A damaged folder is read as far as it can be, and otherwise refused in one line
(:class:`~moebench.errors.MoebenchError`), never with a parser's traceback:

- ``results.parquet`` that cannot be read (truncated, overwritten, not Parquet) is rebuilt
  from ``cells.jsonl``, the source of truth it was written from, and rewritten, with one
  :class:`ResultsRebuilt` warning; without cells to rebuild it from, an error names the file
  and what to do (restore it, or run the suite again with ``--overwrite``).
- ``manifest.json`` that is not a JSON object (or whose ``metric_directions``, ``rank_by``,
  ``metrics``, ``experiments`` or ``runs`` have the wrong type) is an error: it alone records
  which way each metric is better, which every leaderboard, report and comparison ranks by.
  ``cells.jsonl`` holds the cells, not the directions, and reading results never asks the
  installed plugins, so nothing is produced from guessed directions (that could rank the worst
  algorithm first). ``moebench run SUITE --resume`` into the same ``--out`` writes a new
  manifest and keeps every finished cell. A folder without a manifest (written before
  moebench wrote one) is read with :class:`UnrecordedDirection` warnings instead.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..cell.rows import rows_to_frame
from ..errors import MoebenchError, describe_error
from ..execution.store import (
    MANIFEST_FILE,
    PARTIAL_FILE,
    RESULTS_FILE,
    read_cell_lines,
    table_cells,
    write_results_table,
)

__all__ = ["MANIFEST_FILE", "PARTIAL_FILE", "RESULTS_FILE", "STATUSES", "SUCCESS",
           "ResultsRebuilt", "RunResults", "UnrecordedDirection", "describe_commit",
           "describe_runs", "metric_direction", "read_manifest", "read_results",
           "unsuccessful_cells"]

#: Statuses of a cell; the first three count as a success on leaderboards.
STATUSES = ("done", "max_iter", "timeout", "diverged", "error", "crashed", "skipped")
SUCCESS = ("done", "max_iter", "timeout")
#: The direction assumed for a metric whose direction the results do not record.
DEFAULT_DIRECTION = "min"


class UnrecordedDirection(UserWarning):
    """A results folder does not record which way a metric is better (written before
    ``metric_directions`` was recorded in ``manifest.json``)."""


class ResultsRebuilt(UserWarning):
    """``results.parquet`` could not be read and was rebuilt from ``cells.jsonl``."""


#: Parts of a manifest that readers use, and the JSON type each must have.
MANIFEST_PARTS = {"metric_directions": dict, "rank_by": dict, "metrics": dict,
                  "experiments": list, "runs": list}


def _cells_frame(directory: Path) -> tuple[pd.DataFrame | None, int]:
    """The table of the cells in ``cells.jsonl`` (as the run writes ``results.parquet``: the
    last line of each key, one cell per coordinates) and their number; ``(None, 0)`` when it
    holds none."""
    path = directory / PARTIAL_FILE
    try:
        cells, _ = read_cell_lines(path)
    except OSError as exc:
        raise MoebenchError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not cells:
        return None, 0
    kept = table_cells(cells)
    return rows_to_frame([r for rows in kept.values() for r in rows]), len(kept)


def _rebuilt_table(directory: Path, reason: str) -> pd.DataFrame:
    """``results.parquet`` that could not be read (``reason``), rebuilt from ``cells.jsonl``
    and rewritten, with one :class:`ResultsRebuilt` warning."""
    table = directory / RESULTS_FILE
    frame, count = _cells_frame(directory)
    if frame is None:
        raise MoebenchError(
            f"cannot read {table} ({reason}) and there is no {PARTIAL_FILE} with finished "
            f"cells beside it to rebuild it from: restore the file, or run the suite again "
            f"into this folder with --overwrite")
    try:
        write_results_table(directory, frame)
        rewritten = "and rewritten"
    except Exception as exc:  # a read-only folder: the rebuilt table still serves this read
        rewritten = f"(not rewritten: {describe_error(exc)})"
    warnings.warn(f"{table} could not be read ({reason}); rebuilt from {PARTIAL_FILE} "
                  f"({count} cells) {rewritten}", ResultsRebuilt, stacklevel=3)
    return frame


def read_results(directory: str | Path) -> pd.DataFrame:
    """Load a results folder's table.

    ``results.parquet``; for a run that did not finish, the cells of ``cells.jsonl`` (the last
    line of each cell key, one cell per experiment, dataset, algorithm and repetition; a
    partial last line is ignored). A ``results.parquet`` that cannot be read is rebuilt from
    ``cells.jsonl`` and rewritten (a :class:`ResultsRebuilt` warning says so).

    Raises
    ------
    MoebenchError
        The folder holds no results, or ``results.parquet`` cannot be read and there are no
        cells to rebuild it from: one line naming the file and what to do.
    """
    directory = Path(directory)
    table = directory / RESULTS_FILE
    if table.is_file():
        try:
            return pd.read_parquet(table)
        except Exception as exc:  # pyarrow: ArrowInvalid, OSError, ... for a damaged file
            return _rebuilt_table(directory, " ".join(describe_error(exc).split()))
    frame, _ = _cells_frame(directory)
    if frame is not None:
        return frame
    inside = sorted(p.parent.name for p in directory.glob(f"*/{MANIFEST_FILE}")) \
        if directory.is_dir() else []
    hint = f"; did you mean {directory / inside[0]}?" if inside else ""
    raise MoebenchError(
        f"no results in {directory}: expected {RESULTS_FILE} (written by `moebench run`)"
        f"{hint}"
    )


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a results folder (``{}`` when there is none).

    Raises
    ------
    MoebenchError
        The manifest is not a JSON object, or a part that readers use has the wrong type: one
        line naming it and what to do. It is not rebuilt from ``cells.jsonl``, which does not
        record which way each metric is better (see the module docstring).
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return {}
    advice = ("it records which way each metric is better, which cells.jsonl does not; run "
              "the suite again into the same --out with --resume to rewrite it (finished "
              "cells are kept, not recomputed), or restore the file")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not valid JSON: {exc}"
        raise MoebenchError(f"cannot read {path} ({reason}): {advice}") from None
    if not isinstance(manifest, dict):
        raise MoebenchError(f"cannot read {path}: it holds a JSON {type(manifest).__name__}, "
                            f"not an object: {advice}")
    for part, kind in MANIFEST_PARTS.items():
        value = manifest.get(part)
        if value is not None and not isinstance(value, kind):
            wanted = "an object" if kind is dict else "a list"
            raise MoebenchError(f"cannot read {path}: its {part!r} is a JSON "
                                f"{type(value).__name__}, not {wanted}: {advice}")
    bad = [m for m, d in (manifest.get("metric_directions") or {}).items()
           if d not in ("min", "max")]
    if bad:
        raise MoebenchError(f"cannot read {path}: the direction of metric {bad[0]!r} is not "
                            f"'min' or 'max': {advice}")
    return manifest


def name_cells(cells: pd.DataFrame, most: int = 3) -> str:
    """``"gd seed 0, gd seed 2, em seed 1 and 4 more"``: which cells, by algorithm and seed
    (with the dataset where the cells span several)."""
    several = "dataset" in cells and cells["dataset"].nunique() > 1
    names = [f"{r.algorithm}{f' on {r.dataset}' if several else ''} seed {int(r.repetition)}"
             for r in cells.head(most).itertuples(index=False)]
    more = len(cells) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def unsuccessful_cells(results: pd.DataFrame) -> list[tuple[str, str, int]]:
    """``(status, reason, count)`` for the cells that were skipped or failed, one row per
    distinct status and first line of the message, most frequent first; the reason ends with
    the cells it concerns (:func:`name_cells`)."""
    finals = results[(results["record"] == "final") & ~results["status"].isin(SUCCESS)]
    if finals.empty:
        return []
    first = finals["message"].fillna("").astype(str).str.split("\n").str[0]
    finals = finals.assign(reason=first)
    out = []
    for (status, reason), cells in finals.groupby(["status", "reason"], sort=False):
        out.append((status, f"{reason} ({name_cells(cells)})", len(cells)))
    return sorted(out, key=lambda k: -k[2])


def metric_direction(directions: Mapping[str, str] | None, metric: str) -> str:
    """``"min"`` or ``"max"``: which way ``metric`` is better, as recorded with the results.

    Parameters
    ----------
    directions
        The recorded directions (``manifest.json``'s ``metric_directions``).
    metric
        A metric name.

    Returns
    -------
    str
        The recorded direction; ``"min"`` with an :class:`UnrecordedDirection` warning when
        the results do not record one (the installed plugins are never asked).
    """
    if directions and metric in directions:
        return directions[metric]
    warnings.warn(
        f"the direction of metric {metric!r} is not recorded with these results (no "
        "'metric_directions' entry in manifest.json: written before moebench recorded it): "
        f"treated as lower is better; rerun the suite to record it", UnrecordedDirection,
        stacklevel=2)
    return DEFAULT_DIRECTION


def describe_commit(manifest: Mapping[str, Any]) -> str:
    """``git COMMIT`` with the tree's state: clean, or with uncommitted changes."""
    commit = manifest.get("git_commit")
    if not commit:
        return "git commit unknown"
    if commit.endswith("-dirty"):
        return f"git `{commit.removesuffix('-dirty')}` with uncommitted changes"
    return f"git `{commit}`, clean tree"


def describe_runs(manifest: Mapping[str, Any]) -> list[str]:
    """What a folder written by several runs holds (a subset run resumed into a folder keeps
    the earlier runs' cells in its tables): one line on the cells, then one per run, oldest
    first (start, state, experiments selected, cells, command line).

    Parameters
    ----------
    manifest
        The folder's ``manifest.json``.

    Returns
    -------
    list[str]
        The lines (markdown code spans for the command lines); empty for a folder one run
        wrote.
    """
    runs = [r for r in manifest.get("runs") or [] if isinstance(r, Mapping)]
    earlier = manifest.get("earlier_cells") or 0
    if len(runs) < 2 and not earlier:
        return []
    lines = [f"The tables cover {manifest.get('cells_in_folder', '?')} cells: those of the "
             f"last run's selection and {earlier} kept from earlier runs outside it; "
             f"{len(runs)} runs wrote into this folder:"]
    for r in runs:
        argv = list(r.get("command") or [])
        if argv:
            argv[0] = Path(argv[0]).name
        computed = r.get("computed")
        lines.append(f"{r.get('started') or '?'} ({r.get('state') or '?'}): "
                     f"{', '.join(r.get('experiments') or []) or '?'}; "
                     f"{r.get('cells', '?')} cells"
                     + (f" ({computed} computed)" if computed is not None else "")
                     + f"; `{' '.join(argv) or '?'}`")
    return lines


@dataclass
class RunResults:
    """A results folder loaded once: its tidy table, its manifest, and what was recorded with
    them to rank and compare (metric directions, the metric each experiment ranks by).

    Leaderboards computed from it are cached in ``boards`` (see
    :func:`moebench.reports.leaderboard.leaderboard_of`), so the writers of a run's outputs
    share one table and one ranking.
    """

    directory: Path
    frame: pd.DataFrame
    manifest: dict[str, Any]
    boards: dict[Any, pd.DataFrame] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, directory: str | Path) -> RunResults:
        """Read ``manifest.json`` and ``results.parquet`` (or the cells of an unfinished run;
        see :func:`read_results` and :func:`read_manifest` for damaged files)."""
        directory = Path(directory)
        manifest = read_manifest(directory)  # first: a damaged manifest stops before any rebuild
        return cls(directory, read_results(directory), manifest)

    @classmethod
    def of(cls, source: RunResults | str | Path) -> RunResults:
        """``source`` itself when already loaded, else the folder at ``source`` loaded."""
        return source if isinstance(source, RunResults) else cls.load(source)

    @property
    def suite(self) -> str:
        """The suite's name (the folder's name when the manifest does not say)."""
        return self.manifest.get("suite", self.directory.name)

    @property
    def directions(self) -> dict[str, str]:
        """Metric name -> ``"min"`` or ``"max"``, as recorded at run time."""
        return dict(self.manifest.get("metric_directions") or {})

    def direction(self, metric: str) -> str:
        """Which way ``metric`` is better (see :func:`metric_direction`)."""
        return metric_direction(self.directions, metric)

    @property
    def references(self) -> dict[str, frozenset[str]]:
        """Per experiment, the algorithm variants its suite marked ``reference`` (shown on the
        leaderboards, not ranked), as recorded in the manifest."""
        out = {}
        for exp in self.manifest.get("experiments") or []:
            algorithms = exp.get("algorithms") if isinstance(exp, dict) else None
            if isinstance(algorithms, dict):
                out[str(exp.get("name"))] = frozenset(
                    name for name, entry in algorithms.items()
                    if isinstance(entry, dict) and entry.get("reference") is True)
        return out

    @property
    def rank_by(self) -> dict[str, str]:
        """The metric each experiment ranks by, as recorded in the manifest (for results
        without one: the first column recorded as a metric, for every experiment)."""
        ranks = self.manifest.get("rank_by") or {}
        if not ranks:
            known = set(self.directions)
            for names in (self.manifest.get("metrics") or {}).values():
                known.update(names)
            candidates = [c for c in self.frame.columns if c in known]
            ranks = {exp: candidates[0] for exp in self.frame["experiment"].unique()} \
                if candidates else {}
        return ranks
