"""The outputs of a finished run, written from one copy of its results.

The table is built once from the store's cells, written once to ``results.parquet`` and handed,
with the manifest, to every writer as one :class:`RunResults`, so the leaderboard is computed
once and nothing is read back from disk. One output failing never costs the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..errors import describe_error
from ..execution.store import RESULTS_FILE, ResultStore
from .html import HTML_FILE, write_html
from .leaderboard import write_leaderboards
from .markdown import REPORT_FILE, write_reproduction
from .results import RunResults
from .summary import FAILURES_FILE, write_failures


def write_run_outputs(store: ResultStore, manifest: dict[str, Any], reproduction: bool = True,
                      html: bool = True) -> list[str]:
    """Write ``results.parquet``, the leaderboards, ``REPRODUCTION.md`` (``reproduction``),
    ``failures.md`` and ``report.html`` (``html``) of a run.

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
    for name, step in steps:
        try:
            step(run)
        except Exception as exc:
            problems.append(f"{name}: {describe_error(exc)}")
    return problems
