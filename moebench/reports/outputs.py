"""The outputs of a finished run, written from one copy of its results.

The table is built once from the store's cells, written once to ``results.parquet`` and handed,
with the manifest, to every writer as one :class:`RunResults`, so the leaderboard is computed
once and nothing is read back from disk. One output failing never costs the others.

An output that fails (a full disk, a bug in a writer) leaves nothing half-written behind: its
files and every temporary file in the folder are removed (:func:`remove_leftovers`), so the
folder holds the outputs that were written and none that were cut short. The manifest says
which: ``state`` is about the cells (``complete`` when every cell ran), ``outputs`` about the
files computed from them (``writing`` while they are written, then ``written`` or ``failed``
with ``output_errors``; see :func:`record_outputs`).
:func:`finish_outputs` then stops a complete run with :class:`OutputsFailed` (exit 1 on the
command line): its cells are kept, and ``moebench run --resume`` writes the outputs again
without recomputing a cell.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MoebenchError, describe_error
from ..execution.store import MANIFEST_FILE, RESULTS_FILE, ResultStore
from .html import HTML_FILE, write_html
from .leaderboard import write_leaderboards
from .markdown import FIGURE_DIR, REPORT_FILE, write_reproduction
from .results import RunResults
from .summary import FAILURES_FILE, write_failures

#: What each output step writes, removed when the step fails.
STEP_FILES = {"leaderboards": ("leaderboard.csv", "leaderboard.md"),
              REPORT_FILE: (REPORT_FILE, FIGURE_DIR), FAILURES_FILE: (FAILURES_FILE,),
              HTML_FILE: (HTML_FILE,)}


class OutputsFailed(MoebenchError):
    """Every cell of a run is kept, but some of its outputs could not be written.

    Parameters
    ----------
    directory
        The results folder.
    problems
        ``"<output>: <error>"`` for each output that failed.
    """

    def __init__(self, directory: Path, problems: list[str]):
        self.directory, self.problems = directory, problems
        super().__init__(
            f"the finished cells are kept in {directory}, but outputs could not be written: "
            f"{'; '.join(problems)}; fix that (a full disk: free space), then run the suite "
            "again with --resume to write them (no cell is computed again)")


def record_outputs(manifest: dict[str, Any], problems: list[str]) -> None:
    """Record in ``manifest`` whether the outputs of the run were written: ``outputs:
    written``, or ``failed`` with ``output_errors`` (``problems``)."""
    manifest["outputs"] = "failed" if problems else "written"
    if problems:
        manifest["output_errors"] = list(problems)
    else:
        manifest.pop("output_errors", None)


def remove_leftovers(directory: Path, failed: list[str]) -> None:
    """Remove the files of the failed output steps (``failed``: their names, as in
    :data:`STEP_FILES`) and every temporary file (``.*.tmp``) in ``directory``."""
    for name in failed:
        for file in STEP_FILES.get(name, ()):
            path = directory / file
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    for tmp in directory.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def write_run_outputs(store: ResultStore, manifest: dict[str, Any], reproduction: bool = True,
                      html: bool = True) -> list[str]:
    """Write ``results.parquet``, the leaderboards, ``REPRODUCTION.md`` (``reproduction``),
    ``failures.md`` and ``report.html`` (``html``) of a run; what a failing one leaves behind
    is removed (:func:`remove_leftovers`).

    Parameters
    ----------
    store
        The run's result store (its cells and folder).
    manifest
        The run's manifest, as just written to ``manifest.json`` (with ``metric_directions``
        and ``rank_by``).
    reproduction, html
        Whether to write ``REPRODUCTION.md`` (with its figures) and ``report.html``.

    Returns
    -------
    list[str]
        ``"<output>: <error>"`` for each output that could not be written (empty when all
        were).
    """
    problems: list[str] = []
    try:
        frame = store.frame()
    except Exception as exc:
        return [f"{RESULTS_FILE}: {describe_error(exc)}"]
    try:
        store.write_table(frame)
    except Exception as exc:
        problems.append(f"{RESULTS_FILE}: {describe_error(exc)}")
    # the manifest as the reports would read it back from manifest.json
    run = RunResults(store.directory, frame, json.loads(json.dumps(manifest, default=str)))
    steps: list[tuple[str, Callable[[RunResults], Any]]] = [("leaderboards", write_leaderboards)]
    if reproduction:
        steps.append((REPORT_FILE, write_reproduction))
    steps.append((FAILURES_FILE, write_failures))
    if html:
        steps.append((HTML_FILE, write_html))
    failed: list[str] = []
    for name, step in steps:
        try:
            step(run)
        except Exception as exc:
            problems.append(f"{name}: {describe_error(exc)}")
            failed.append(name)
    if problems:
        remove_leftovers(store.directory, failed)
    return problems


def finish_outputs(store: ResultStore, manifest: dict[str, Any], *, complete: bool,
                   reproduction: bool = True, html: bool = True) -> list[str]:
    """Write a run's outputs (:func:`write_run_outputs`) and record in its manifest whether
    they were written (:func:`record_outputs`).

    Parameters
    ----------
    store, manifest
        The run's store and manifest (``outputs: writing`` already on disk).
    complete
        Whether every cell ran: then a failed output stops the run (an interrupted run goes
        on to say that it was interrupted).
    reproduction, html
        As for :func:`write_run_outputs`.

    Returns
    -------
    list[str]
        The outputs that failed, as :func:`write_run_outputs` lists them, and
        ``manifest.json`` when the manifest itself could not be rewritten (it then still
        says ``outputs: writing``).

    Raises
    ------
    OutputsFailed
        ``complete`` and an output failed.
    """
    problems = write_run_outputs(store, manifest, reproduction=reproduction, html=html)
    record_outputs(manifest, problems)
    try:
        store.write_manifest(manifest)
    except OSError as exc:  # still no room, even with the leftovers removed
        problems = [*problems, f"{MANIFEST_FILE}: {describe_error(exc)}"]
    if problems and complete:
        raise OutputsFailed(store.directory, problems)
    return problems
