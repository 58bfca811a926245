"""The results store: tidy rows on disk as soon as each cell finishes.

Layout of ``<out>/<suite>/``:

- ``cells.jsonl``: one line per finished cell (its rows), appended and flushed immediately, so
  an interrupted or crashing run loses nothing already computed;
- ``results.parquet``: the tidy table, written at the end (and on interruption): one row per
  recorded iteration (``record == "iteration"``) and one row per cell (``record == "final"``);
- ``manifest.json``: versions, device, git commit, command line, times, counts by status.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import MoebenchError

RESULTS_FILE = "results.parquet"
PARTIAL_FILE = "cells.jsonl"
MANIFEST_FILE = "manifest.json"

#: Statuses of a cell; the first three count as a success on leaderboards.
STATUSES = ("done", "max_iter", "timeout", "diverged", "error", "skipped")
SUCCESS = ("done", "max_iter", "timeout")


class ResultsStore:
    """Append-only store for one suite run in ``directory``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.partial = self.directory / PARTIAL_FILE
        self.partial.write_text("")
        self.rows: list[dict[str, Any]] = []

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Record one finished cell's rows, durably."""
        self.rows.extend(rows)
        with self.partial.open("a") as fh:
            fh.write(json.dumps(rows, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def frame(self) -> pd.DataFrame:
        return rows_to_frame(self.rows)

    def write_table(self) -> Path:
        """Write ``results.parquet`` from every row recorded so far."""
        path = self.directory / RESULTS_FILE
        self.frame().to_parquet(path, index=False)
        return path

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        path = self.directory / MANIFEST_FILE
        path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        return path


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows to a DataFrame with a stable column order (ids first, metrics last)."""
    frame = pd.DataFrame(rows)
    first = [c for c in ID_COLUMNS if c in frame.columns]
    rest = sorted(c for c in frame.columns if c not in ID_COLUMNS)
    return frame[first + rest]


ID_COLUMNS = [
    "suite",
    "experiment",
    "record",
    "dataset",
    "algorithm",
    "repetition",
    "iteration",
    "time",
    "status",
    "message",
    "dataset_name",
    "dataset_params",
    "model",
    "model_params",
    "algorithm_name",
    "algorithm_params",
    "seed",
    "data_seed",
    "init_seed",
    "objective",
]


def read_results(directory: str | Path) -> pd.DataFrame:
    """Load a results folder: ``results.parquet``, or the partial log of an interrupted run."""
    directory = Path(directory)
    table = directory / RESULTS_FILE
    if table.is_file():
        return pd.read_parquet(table)
    partial = directory / PARTIAL_FILE
    if partial.is_file():
        rows = [r for line in partial.read_text().splitlines() if line for r in json.loads(line)]
        if rows:
            return rows_to_frame(rows)
    raise MoebenchError(
        f"no results in {directory}: expected {RESULTS_FILE} (written by `moebench run`)"
    )


def unsuccessful_cells(results: pd.DataFrame) -> list[tuple[str, str, int]]:
    """``(status, reason, count)`` for the cells that were skipped or failed, one row per
    distinct status and first line of the message, most frequent first."""
    finals = results[(results["record"] == "final") & ~results["status"].isin(SUCCESS)]
    if finals.empty:
        return []
    first = finals["message"].fillna("").astype(str).str.split("\n").str[0]
    counts = finals.assign(reason=first).groupby(["status", "reason"]).size()
    return [(s, r, int(n)) for (s, r), n in counts.sort_values(ascending=False).items()]


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
