"""The history folder: results kept per machine, commit, run options and suite.

Layout (``.moebench/history/`` by default, ``$MOEBENCH_HISTORY`` or ``--history`` elsewhere)::

    <root>/<machine>/<commit>/<variant>/<suite>/    an ordinary results folder
        cells.jsonl, results.parquet, manifest.json, leaderboard.md, ...
        entry.json                                  commit, its date and subject, machine,
                                                    the run options, when it was recorded

``variant`` names the run options (``default`` without any, else ``opts-`` and a hash of
them, which ``entry.json`` spells out): runs with other seeds or selections are other series.

Why a folder of results folders rather than one table partitioned by commit: every entry is
what ``moebench run`` writes, crash-safe ``cells.jsonl`` included, so ``moebench compare``,
``report`` and ``leaderboard`` read it as they read any run; adding a commit writes one new
folder and rewrites nothing; a CI cache or ``rsync`` keeps it with a plain copy; and deleting
a commit's results is deleting its folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import MoebenchError

#: The history folder used when neither ``--history`` nor ``$MOEBENCH_HISTORY`` names one.
DEFAULT_ROOT = Path(".moebench") / "history"
HISTORY_ENV = "MOEBENCH_HISTORY"
MACHINE_ENV = "MOEBENCH_MACHINE"
ENTRY_FILE = "entry.json"
MACHINE_FILE = "machine.json"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DamagedEntry(UserWarning):
    """An entry of the history cannot be read; it is left out (delete its folder, or run its
    commit again)."""


def machine_name(name: str | None = None) -> str:
    """The machine's name in the history: ``name``, else ``$MOEBENCH_MACHINE``, else the host
    name, reduced to letters, digits, ``.``, ``_`` and ``-``."""
    raw = name or os.environ.get(MACHINE_ENV) or platform.node() or "machine"
    safe = _SAFE.sub("-", raw).strip(".-")[:64]
    if not safe:
        raise MoebenchError(f"machine name {raw!r} has no usable character: use letters, "
                            "digits, '.', '_' or '-'")
    return safe


def _option_groups(options: list[str]) -> list[tuple[str, ...]]:
    """``["-e", "x", "--seeds", "6", "--quick"]`` -> ``[("-e", "x"), ("--seeds", "6"),
    ("--quick",)]``: each option with the value that follows it."""
    groups: list[list[str]] = []
    for token in options:
        if token.startswith("-") or not groups or len(groups[-1]) > 1:
            groups.append([token])
        else:
            groups[-1].append(token)
    return [tuple(g) for g in groups]


def variant_of(options: list[str]) -> str:
    """The series name of a set of ``moebench run`` options (``default`` for none); the order
    of the options does not matter (``-e x --seeds 6`` is ``--seeds 6 -e x``)."""
    if not options:
        return "default"
    canonical = sorted(_option_groups(options))
    text = "\0".join("\1".join(g) for g in canonical)
    return "opts-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def history_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$MOEBENCH_HISTORY``, else :data:`DEFAULT_ROOT`."""
    return Path(root or os.environ.get(HISTORY_ENV) or DEFAULT_ROOT)


@dataclass(frozen=True)
class HistoryEntry:
    """One results folder of the history and where it came from."""

    directory: Path
    machine: str
    suite: str
    commit: str
    commit_time: int
    subject: str
    variant: str = "default"
    options: list[str] = field(default_factory=list)
    recorded: str = ""

    @property
    def short(self) -> str:
        """The commit's first 8 characters."""
        return self.commit[:8]

    @property
    def series(self) -> tuple[str, str, str]:
        """``(machine, suite, variant)``: the entries comparable over commits."""
        return (self.machine, self.suite, self.variant)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("directory")
        return data


class History:
    """The history folder at ``root`` (see the module docstring).

    Parameters
    ----------
    root
        The folder (default: :func:`history_root`).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = history_root(root)

    def parent_for(self, machine: str, commit: str, options: list[str]) -> Path:
        """The ``--out`` folder for a run of ``commit`` with ``options`` on ``machine``: the
        run writes its results folder ``<suite>/`` inside it."""
        if not re.fullmatch(r"[0-9a-f]{7,64}", commit):
            raise MoebenchError(f"not a commit hash: {commit!r}")
        return self.root / machine_name(machine) / commit / variant_of(options)

    def record(self, directory: str | Path, *, machine: str, commit: str, commit_time: int,
               subject: str, options: list[str]) -> HistoryEntry:
        """Write ``entry.json`` into a results folder of the history (and the machine's
        ``machine.json`` from the run's manifest when there is none yet)."""
        directory = Path(directory)
        manifest_path = directory / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        entry = HistoryEntry(directory, machine_name(machine),
                             str(manifest.get("suite") or directory.name), commit,
                             int(commit_time), subject, variant_of(options), list(options),
                             datetime.now(UTC).isoformat(timespec="seconds"))
        (directory / ENTRY_FILE).write_text(json.dumps(entry.as_dict(), indent=1) + "\n")
        # the machine's facts as of its latest recorded run (torch may have been upgraded)
        keys = ("platform", "cpu_count", "python", "torch", "numpy", "device_description")
        (self.root / entry.machine / MACHINE_FILE).write_text(
            json.dumps({k: manifest.get(k) for k in keys}, indent=1) + "\n")
        return entry

    def entries(self, machine: str | None = None, suite: str | None = None) -> list[HistoryEntry]:
        """Every recorded entry, oldest commit first (optionally of one machine or suite)."""
        found: list[HistoryEntry] = []
        if not self.root.is_dir():
            return found
        machine = None if machine is None else machine_name(machine)
        for path in self.root.glob(f"*/*/*/*/{ENTRY_FILE}"):
            try:
                data = json.loads(path.read_text())
                entry = HistoryEntry(path.parent, **data)
                entry = replace(entry, commit_time=int(entry.commit_time))
                if not (path.parent / "manifest.json").is_file():
                    raise ValueError("its manifest.json is missing")
            except (OSError, ValueError, TypeError) as exc:
                warnings.warn(f"{path.parent} is not a readable history entry ({exc}): left "
                              "out; delete that folder, or run that commit again "
                              "(moebench compare-commits)", DamagedEntry, stacklevel=2)
                continue
            if (machine is None or entry.machine == machine) and \
                    (suite is None or entry.suite == suite):
                found.append(entry)
        return sorted(found, key=lambda e: (e.commit_time, e.commit, e.variant))

    def find(self, machine: str, commit: str, suite: str,
             options: list[str]) -> HistoryEntry | None:
        """The entry of ``commit`` with these options on this machine, if it is complete."""
        variant = variant_of(options)
        for entry in self.entries(machine, suite):
            if entry.commit == commit and entry.variant == variant:
                try:
                    manifest = json.loads((entry.directory / "manifest.json").read_text())
                except (OSError, ValueError):
                    continue
                if isinstance(manifest, dict) and manifest.get("state") == "complete":
                    return entry
        return None

    def machine_facts(self, machine: str) -> dict[str, Any]:
        """What ``machine.json`` says of a machine (``{}`` when nothing was recorded)."""
        path = self.root / machine_name(machine) / MACHINE_FILE
        return json.loads(path.read_text()) if path.is_file() else {}
