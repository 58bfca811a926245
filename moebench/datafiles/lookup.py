"""Finding a source's files (:func:`locate`) and reporting where they are (:func:`status`).

:func:`locate` finds a directory holding all of a source's files, searching in this order:

1. the explicit path given in the suite (``path`` parameter); when given, it is the only place
   searched, so that a mistyped path is reported rather than silently replaced;
2. ``$MOEBENCH_DATA/<subdir>`` (tests and CI point ``MOEBENCH_DATA`` at ``../shared/data``);
3. the user cache, ``$MOEBENCH_CACHE/<subdir>`` or, when that is unset,
   ``platformdirs.user_cache_dir("moebench")/<subdir>``;
4. the Debian package location (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST).

If none holds every file, :func:`locate` downloads the missing ones from their canonical URLs
into the cache and verifies their checksums (unless ``MOEBENCH_OFFLINE=1``); when that is not
possible it raises :class:`~moebench.errors.DataUnavailable` naming the missing files, the places
searched, and what to do (:func:`missing_message`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataUnavailable
from .checksums import FileStatus, check_files, refuse_unverified
from .download import fetch
from .places import DATA_ENV, OFFLINE_ENV, offline, search_places
from .sources import DataFile, DataSource


def _present(root: Path, files: Sequence[DataFile]) -> list[DataFile]:
    return [f for f in files if (root / f.relpath).is_file()]


def locate(
    source: DataSource,
    explicit: str | os.PathLike | None = None,
    files: Iterable[str] | None = None,
    *,
    download: bool | None = None,
) -> tuple[Path, str]:
    """Find the directory that holds ``files`` of ``source``, downloading them if needed.

    Parameters
    ----------
    source
        The data source.
    explicit
        A directory given in the suite; when given, it is the only place searched. A path to one
        of the source's files is accepted too (its directory is used).
    files
        Relative paths of the files needed (default: all of the source's files).
    download
        Download missing files into the cache when they are nowhere else. ``None`` (default):
        download unless ``MOEBENCH_OFFLINE`` is set. Never with an explicit path.

    Returns
    -------
    tuple of (Path, str)
        The directory and a label of where it was found (``$MOEBENCH_DATA``, ``cache``, ...).

    Raises
    ------
    DataUnavailable
        No place holds every file and they could not be downloaded; the message lists the
        missing files, the places searched and how to provide them.
    DataError
        A download did not match its checksum, or a file to download (or found in the cache)
        has no known checksum (see :func:`allow_unverified`).
    """
    needed = source.select(files)
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.is_file():  # a path to one of the files: use the source root that holds it
            for f in needed:
                parts = Path(f.relpath).parts
                if p.name == parts[-1]:
                    explicit = p.parents[len(parts) - 1]
                    break
    places = search_places(source, explicit)
    for label, root in places:
        if root is not None and len(_present(root, needed)) == len(needed):
            if label == "cache":
                refuse_unverified(source, needed, root, "cache")
            return root, label
    if download is None:
        download = not offline()
    problem = ""
    if download and explicit is None:
        try:
            root = fetch(source, [f.relpath for f in needed])
            return root, "cache (downloaded)"
        except (DataUnavailable, OSError) as exc:
            problem = f"download failed: {exc}"
    elif explicit is None and not download:
        problem = f"downloads are disabled (${OFFLINE_ENV} is set)"
    raise DataUnavailable(missing_message(source, needed, places, problem))


def missing_message(source: DataSource, needed: Sequence[DataFile],
                    places: Sequence[tuple[str, Path | None]], problem: str = "") -> str:
    """The message of :class:`DataUnavailable`: missing files, places searched, what to do."""
    # report the missing files relative to the place that has the most of them
    best_root, best_missing = None, list(needed)
    for _, root in places:
        if root is None:
            continue
        missing = [f for f in needed if not (root / f.relpath).is_file()]
        if len(missing) < len(best_missing):
            best_root, best_missing = root, missing
    names = [f.relpath for f in best_missing]
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    explicit = places[0][1] if places and places[0][0] == "explicit path" else None
    lines = []
    if explicit is not None and not explicit.exists():
        lines.append(f"{source.name}: no such file or directory: {explicit} (the dataset's "
                     "`path` parameter)")
    lines.append(f"{source.name}: {len(best_missing)} of {len(needed)} data files not found: "
                 f"{shown}")
    if best_root is not None:
        lines.append(f"  (the closest copy, {best_root}, lacks only these)")
    lines.append("  searched:")
    for label, root in places:
        where = str(root) if root is not None else f"(not set: ${DATA_ENV} is unset)"
        lines.append(f"    {label}: {where}")
    if problem:
        lines.append(f"  {problem}")
    if explicit is not None:
        lines.append(f"  put these files in {explicit}, or drop the dataset's `path` "
                     f"parameter to use ${DATA_ENV} or the cache")
    else:
        lines.append(
            f"  run `moebench data fetch {source.name}` or set ${DATA_ENV} to a directory "
            f"whose '{source.subdir}/' sub-directory holds these files"
        )
    if source.homepage:
        lines.append(f"  (data: {source.homepage})")
    return "\n".join(lines)


@dataclass(frozen=True)
class SourceStatus:
    """What :func:`status` found for one source (one row of ``moebench data list``)."""

    source: DataSource
    present: int
    total: int
    where: str | None
    root: Path | None
    checks: dict[str, FileStatus]

    @property
    def complete(self) -> bool:
        return self.present == self.total

    @property
    def verified(self) -> str:
        """``yes``, ``no (n mismatched)``, ``partly (n unchecked)`` or ``-`` (nothing found)."""
        if self.root is None:
            return "-"
        values = list(self.checks.values())
        mismatched = sum(s == "mismatch" for s in values)
        unknown = sum(s == "unknown" for s in values)
        if mismatched:
            return f"no ({mismatched} mismatched)"
        if unknown:
            return f"partly ({unknown} without checksum)"
        return "yes"


def status(source: DataSource, explicit: str | os.PathLike | None = None, *,
           check: bool = True) -> SourceStatus:
    """Where ``source``'s files are (the first complete place, else the fullest) and their checks.

    Nothing is downloaded.
    """
    best: tuple[int, str | None, Path | None] = (0, None, None)
    for label, root in search_places(source, explicit):
        if root is None:
            continue
        n = len(_present(root, source.files))
        if n == len(source.files):
            best = (n, label, root)
            break
        if n > best[0]:
            best = (n, label, root)
    n, label, root = best
    checks = check_files(source, root) if (root is not None and check) else {}
    return SourceStatus(source, n, len(source.files), label, root, checks)
