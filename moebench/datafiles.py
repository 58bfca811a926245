"""Where real datasets' files come from: locating, verifying and downloading them.

A dataset plugin that reads files declares a :class:`DataSource`: the files it needs (relative
to the source's sub-directory), their published checksums and canonical URLs. :func:`locate`
finds a directory holding all of them, searching in this order:

1. the explicit path given in the suite (``path`` parameter); when given, it is the only place
   searched, so that a mistyped path is reported rather than silently replaced;
2. ``$MOEBENCH_DATA/<subdir>`` (tests and CI point ``MOEBENCH_DATA`` at ``../shared/data``);
3. the user cache, ``$MOEBENCH_CACHE/<subdir>`` or, when that is unset,
   ``platformdirs.user_cache_dir("moebench")/<subdir>``;
4. the Debian package location (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST).

If none holds every file, :func:`locate` downloads the missing ones from their canonical URLs
into the cache and verifies their checksums (unless ``MOEBENCH_OFFLINE=1``); when that is not
possible it raises :class:`~moebench.errors.DataUnavailable` naming the missing files, the places
searched, and what to do. Files are read in their original formats, never converted copies.

Downloads go through `pooch <https://www.fatiando.org/pooch>`_ (``pooch.retrieve`` with a
``known_hash``): a file is streamed to a temporary file next to its destination and moved into
place only when its md5 matches, so a failed or corrupt download leaves nothing behind. Besides
pooch's protocols (``http``, ``https``, ``ftp``, ...) ``file://`` URLs are accepted, for a local
mirror.

**Checksums are required.** Every file moebench downloads must have a known checksum: its own
published md5, or, for members of an :class:`Archive`, the archive's md5 (a member is also
checked against its own md5 when one is declared). A file without one is *refused*:
:func:`fetch` raises :class:`~moebench.errors.DataError` before downloading it, and a file in
the cache without one is not used. The explicit opt-in ``MOEBENCH_ALLOW_UNVERIFIED=1`` accepts
such files (pooch logs their sha256). Files a user provides (explicit path, ``$MOEBENCH_DATA``)
are the user's responsibility and are read even when no checksum is known.

:func:`verify` checks files against their md5 (hashed with ``pooch.file_hash``, cached within
the process by path, size and modification time) before a loader reads them. Files without an
embedded checksum are checked against a ``MANIFEST.tsv`` (columns path, size, md5, sha256) in
the parent of the directory when there is one, as in ``shared/data``. A mismatch is a
:class:`~moebench.errors.DataError` "checksum mismatch for FILE ... run
`moebench data fetch NAME --force`"; so is a decompression error (truncated or bit-flipped
``.gz``, ``.xlsx``, tarball) met while reading a file (:func:`reading`).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import tarfile
import tempfile
import threading
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pooch

from .errors import DataError, DataUnavailable

__all__ = [
    "DECOMPRESSION_ERRORS",
    "Archive",
    "DataFile",
    "DataSource",
    "SourceStatus",
    "Standardized",
    "allow_unverified",
    "cache_dir",
    "check_files",
    "data_dir",
    "fetch",
    "file_md5",
    "fixed_split",
    "locate",
    "mismatch_message",
    "offline",
    "reading",
    "search_places",
    "standardize",
    "status",
    "subsample",
    "verify",
]

DATA_ENV = "MOEBENCH_DATA"
CACHE_ENV = "MOEBENCH_CACHE"
OFFLINE_ENV = "MOEBENCH_OFFLINE"
ALLOW_UNVERIFIED_ENV = "MOEBENCH_ALLOW_UNVERIFIED"
_CHUNK = 1 << 20

#: Exceptions that decompressors and archive readers raise on a truncated or corrupt file.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile, tarfile.TarError,
    lzma.LZMAError,
)

#: Result of checking one file: ``ok`` (md5 matches), ``ok-content`` (a re-packed ``.gz`` whose
#: decompressed bytes match), ``mismatch``, ``unknown`` (no checksum to compare) or ``missing``.
FileStatus = Literal["ok", "ok-content", "mismatch", "unknown", "missing"]


@dataclass(frozen=True)
class DataFile:
    """One file of a data source.

    Attributes
    ----------
    relpath
        Path relative to the source's directory (``/``-separated).
    md5
        Published (or recorded) md5 of the file's bytes; ``None`` when unknown.
    sha256
        sha256 of the file's bytes, for the record (verification uses md5).
    url
        Canonical URL the file is downloaded from; ``None`` when only an archive provides it.
    content_md5
        For ``.gz`` files: md5 of the decompressed bytes, so that a copy whose gzip header was
        rewritten (Debian strips it) is still recognised as the same data.
    exact
        Whether a copy with other bytes is an error. ``False`` for spreadsheets that every
        upstream copy re-saves (only the cell contents are canonical): a mismatch then gives a
        warning and the loader checks the contents by shape.
    """

    relpath: str
    md5: str | None
    sha256: str | None = None
    url: str | None = None
    content_md5: str | None = None
    exact: bool = True


@dataclass(frozen=True)
class Archive:
    """A compressed tarball that provides a source's files (e.g. CIFAR-10).

    Attributes
    ----------
    url
        Download URL.
    md5
        Published md5 of the archive.
    filename
        File name of the archive in the cache.
    member_prefix
        Prefix of the members inside the archive (``cifar-10-batches-py/``); it is stripped so
        that member ``<prefix><relpath>`` becomes ``<subdir>/<relpath>``.
    """

    url: str
    md5: str
    filename: str
    member_prefix: str = ""


@dataclass(frozen=True)
class DataSource:
    """The files of one real dataset and where they come from.

    Attributes
    ----------
    name
        Source name (``moebench data fetch NAME`` accepts it, as well as dataset names).
    subdir
        Sub-directory of ``$MOEBENCH_DATA`` and of the cache that holds the files.
    files
        Every file, with checksums and URLs.
    citation, license
        What to cite and the data's licence.
    debian_dir
        Directory where a Debian package installs the same files, if any.
    archive
        Tarball that provides the files when they have no individual URLs.
    homepage
        Human-readable page describing the data.
    """

    name: str
    subdir: str
    files: tuple[DataFile, ...]
    citation: str
    license: str
    debian_dir: str | None = None
    archive: Archive | None = None
    homepage: str | None = None
    _index: dict[str, DataFile] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {f.relpath: f for f in self.files})

    def file(self, relpath: str) -> DataFile:
        """The declared file ``relpath``."""
        try:
            return self._index[relpath]
        except KeyError:
            raise KeyError(f"{self.name}: no file {relpath!r} is declared") from None

    def select(self, relpaths: Iterable[str] | None) -> tuple[DataFile, ...]:
        """The declared files named in ``relpaths`` (all files when ``None``)."""
        if relpaths is None:
            return self.files
        return tuple(self.file(r) for r in relpaths)


# ------------------------------------------------------------------------------- places


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def data_dir() -> Path | None:
    """``$MOEBENCH_DATA`` as a path, or ``None`` when unset or empty."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The download cache: ``$MOEBENCH_CACHE``, else ``platformdirs.user_cache_dir("moebench")``."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("moebench"))


def offline() -> bool:
    """Whether automatic downloads are disabled (``MOEBENCH_OFFLINE`` set to a true value)."""
    return _truthy(OFFLINE_ENV)


def allow_unverified() -> bool:
    """Whether downloads without a known checksum are accepted (``MOEBENCH_ALLOW_UNVERIFIED``).

    Off by default: moebench refuses to download, or to use from its cache, a file whose
    checksum is not known (see the module docstring).
    """
    return _truthy(ALLOW_UNVERIFIED_ENV)


def search_places(source: DataSource, explicit: str | os.PathLike | None = None
                  ) -> list[tuple[str, Path | None]]:
    """The places :func:`locate` searches, in order, as ``(label, directory)``.

    ``directory`` is ``None`` for a place that is not configured (``MOEBENCH_DATA`` unset).
    """
    if explicit is not None:
        return [("explicit path", Path(explicit).expanduser())]
    env = data_dir()
    places: list[tuple[str, Path | None]] = [
        (f"${DATA_ENV}", env / source.subdir if env is not None else None),
        ("cache", cache_dir() / source.subdir),
    ]
    if source.debian_dir:
        places.append(("Debian package", Path(source.debian_dir)))
    return places


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
                _refuse_unverified(source, needed, root, "cache")
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


# ------------------------------------------------------------------------------ checksums

_md5_cache: dict[tuple[str, int, int, bool], str] = {}
_md5_lock = threading.Lock()


def file_md5(path: str | os.PathLike, *, decompressed: bool = False) -> str:
    """md5 of a file's bytes (or of its gunzipped bytes), streamed and cached per process.

    The bytes are hashed with ``pooch.file_hash``. The cache key is the resolved path, size and
    modification time, so a replaced file is hashed again.

    Raises
    ------
    OSError, EOFError, zlib.error
        With ``decompressed``: the file is not valid gzip data (see
        :data:`DECOMPRESSION_ERRORS`).
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, decompressed)
    with _md5_lock:
        if key in _md5_cache:
            return _md5_cache[key]
    if decompressed:
        h = hashlib.md5()
        with gzip.open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
        digest = h.hexdigest()
    else:
        digest = pooch.file_hash(str(p), alg="md5")
    with _md5_lock:
        _md5_cache[key] = digest
    return digest


_manifest_cache: dict[tuple[str, int], dict[str, str]] = {}


def _manifest(root: Path, subdir: str) -> dict[str, str]:
    """``relpath -> md5`` from ``root.parent / MANIFEST.tsv`` for entries under ``subdir``."""
    path = root.parent / "MANIFEST.tsv"
    if root.name != Path(subdir).name or not path.is_file():
        return {}
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns)
    if key not in _manifest_cache:
        table: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) >= 3:
                table[cols[0]] = cols[2].strip().lower()
        _manifest_cache[key] = table
    prefix = subdir.rstrip("/") + "/"
    return {k[len(prefix):]: v for k, v in _manifest_cache[key].items() if k.startswith(prefix)}


def _content_matches(path: Path, content_md5: str) -> bool:
    """Whether a ``.gz`` file's decompressed bytes have ``content_md5`` (False if corrupt)."""
    try:
        return file_md5(path, decompressed=True) == content_md5
    except (OSError, *DECOMPRESSION_ERRORS):
        return False


def check_files(source: DataSource, root: str | os.PathLike,
                files: Iterable[str] | None = None) -> dict[str, FileStatus]:
    """Check each file's md5 against the embedded checksum (or the folder's MANIFEST.tsv).

    A corrupt compressed file is reported as ``mismatch``, never as an exception.

    Returns
    -------
    dict
        ``relpath -> status`` (see :data:`FileStatus`).
    """
    root = Path(root)
    manifest: dict[str, str] | None = None
    result: dict[str, FileStatus] = {}
    for f in source.select(files):
        path = root / f.relpath
        if not path.is_file():
            result[f.relpath] = "missing"
            continue
        expected = f.md5
        if expected is None:
            if manifest is None:
                manifest = _manifest(root, source.subdir)
            expected = manifest.get(f.relpath)
        if expected is None:
            result[f.relpath] = "unknown"
        elif file_md5(path) == expected:
            result[f.relpath] = "ok"
        elif f.content_md5 and _content_matches(path, f.content_md5):
            result[f.relpath] = "ok-content"
        else:
            result[f.relpath] = "mismatch"
    return result


def mismatch_message(source: DataSource, root: str | os.PathLike, relpaths: Sequence[str],
                     detail: str = "") -> str:
    """The message for files whose checksum does not match: which, and what to do.

    Each file is named as ``checksum mismatch for PATH (md5 ..., expected ...)``; the remedy is
    ``moebench data fetch NAME --force`` (or replacing the file where it was found).
    """
    root = Path(root)
    parts = []
    for r in relpaths:
        path = root / r
        try:
            got = file_md5(path)
        except OSError:
            got = "unreadable"
        expected = _expected(source, root, r)
        parts.append(f"checksum mismatch for {path} (md5 {got}, expected "
                     f"{expected or 'unknown'})")
    cache = cache_dir() / source.subdir
    where = "" if root.resolve() == cache.resolve() else (
        f", or replace the file(s) in {root} with the published ones")
    detail = f" ({detail})" if detail else ""
    return (f"{source.name}: {'; '.join(parts)}{detail}: the copy is corrupt or not the "
            f"published file, run `moebench data fetch {source.name} --force` to download a "
            f"verified copy into {cache}{where}")


def verify(source: DataSource, root: str | os.PathLike, files: Iterable[str] | None = None,
           ) -> bool:
    """Check the files a loader is about to read; ``True`` when every checksum matched.

    Raises
    ------
    DataError
        A file declared ``exact`` has other bytes than published (a corrupt or different copy):
        "checksum mismatch for FILE ..., run `moebench data fetch NAME --force`". Mismatches of
        non-exact files (re-saved spreadsheets) give a warning instead.
    DataUnavailable
        A file is missing.
    """
    statuses = check_files(source, root, files)
    bad = [r for r, s in statuses.items() if s == "mismatch"]
    fatal = [r for r in bad if source.file(r).exact]
    if fatal:
        raise DataError(mismatch_message(source, root, fatal))
    if bad:
        warnings.warn(
            f"{source.name}: {', '.join(bad)} in {root} differ from the recorded copy "
            "(spreadsheets are often re-saved); the contents are checked by shape instead",
            stacklevel=2,
        )
    missing = [r for r, s in statuses.items() if s == "missing"]
    if missing:
        raise DataUnavailable(f"{source.name}: missing in {root}: {', '.join(missing)}")
    return all(s in ("ok", "ok-content") for s in statuses.values())


@contextmanager
def reading(source: DataSource, root: str | os.PathLike,
            files: Iterable[str] | None = None) -> Iterator[None]:
    """Context for a loader reading ``files`` of ``source``: read errors of corrupt files.

    Any exception raised inside becomes a :class:`~moebench.errors.DataError` with the
    checksum-mismatch message (:func:`mismatch_message`) when one of the files does not match
    its checksum (e.g. a re-saved spreadsheet that :func:`verify` only warned about is
    truncated). A decompression error (:data:`DECOMPRESSION_ERRORS`) of a file whose checksum
    is unknown gets the same remedy. Other exceptions pass unchanged.
    """
    try:
        yield
    except Exception as exc:
        reason = f"reading failed: {type(exc).__name__}: {exc}"
        relpaths = None if files is None else list(files)
        bad = [r for r, s in check_files(source, root, relpaths).items() if s == "mismatch"]
        if bad:
            raise DataError(mismatch_message(source, root, bad, reason)) from exc
        if isinstance(exc, DECOMPRESSION_ERRORS):
            raise DataError(
                f"{source.name}: a file in {root} is corrupt ({reason}); run `moebench data "
                f"fetch {source.name} --force` or replace it with the published file"
            ) from exc
        raise


def _expected(source: DataSource, root: Path, relpath: str) -> str | None:
    return source.file(relpath).md5 or _manifest(root, source.subdir).get(relpath)


def _refuse_unverified(source: DataSource, files: Sequence[DataFile], root: Path,
                       what: str) -> None:
    """DataError when downloaded files (in the cache) have no known checksum, unless allowed."""
    if allow_unverified():
        return
    manifest = _manifest(root, source.subdir)
    # members of an archive are covered by the archive's checksum
    unknown = [f.relpath for f in files if f.md5 is None and f.relpath not in manifest
               and not (not f.url and source.archive is not None)]
    if unknown:
        shown = ", ".join(unknown[:8]) + (f", ... ({len(unknown)} in all)"
                                          if len(unknown) > 8 else "")
        verb = "download" if what == "download" else "use the downloaded copies of"
        raise DataError(
            f"{source.name}: no published checksum is known for {shown}; moebench does not "
            f"{verb} files it cannot verify. Put copies you trust in ${DATA_ENV}/"
            f"{source.subdir} (or give the dataset's `path`), or set "
            f"{ALLOW_UNVERIFIED_ENV}=1 to accept unverified downloads"
        )


# ----------------------------------------------------------------------------- status


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


# ---------------------------------------------------------------------------- download


def _file_downloader(url: str, output_file: Any, pooch_obj: Any = None) -> None:
    """A pooch downloader for ``file://`` URLs (a local mirror)."""
    parsed = urllib.parse.urlparse(url)
    src = Path(urllib.request.url2pathname(parsed.path))
    with open(src, "rb") as fin:
        if hasattr(output_file, "write"):
            shutil.copyfileobj(fin, output_file, _CHUNK)
        else:
            with open(output_file, "wb") as out:
                shutil.copyfileobj(fin, out, _CHUNK)


def _downloader(url: str, timeout: float) -> Callable[..., Any]:
    """The pooch downloader for ``url``'s protocol (``file://`` included)."""
    if urllib.parse.urlparse(url).scheme == "file":
        return _file_downloader
    if urllib.parse.urlparse(url).scheme in ("http", "https"):
        return pooch.HTTPDownloader(progressbar=False, timeout=timeout,
                                    headers={"User-Agent": "moebench"})
    try:
        return pooch.downloaders.choose_downloader(url)
    except ValueError as exc:
        raise DataUnavailable(f"cannot download {url}: {exc}") from None


def _download(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Download ``url`` to ``dest`` with ``pooch.retrieve``, checking the md5.

    pooch streams to a temporary file in ``dest``'s directory and moves it into place only when
    the checksum matches: nothing is left at ``dest`` when the download fails or mismatches. An
    existing ``dest`` with the right md5 is kept (no download).

    Raises
    ------
    DataError
        The downloaded bytes do not have ``md5`` (the download was discarded).
    DataUnavailable
        The server cannot be reached or the file is not there.
    """
    import requests

    known_hash = f"md5:{md5}" if md5 is not None else None
    downloader = _downloader(url, timeout)
    try:
        pooch.retrieve(url, known_hash=known_hash, fname=dest.name, path=dest.parent,
                       downloader=downloader, progressbar=False)
    except ValueError as exc:  # pooch: hash mismatch ("... does not match the known hash")
        raise DataError(
            f"checksum mismatch for {url}: {exc} The download was discarded; the mirror may "
            "serve another version: report it, or put a verified copy in place yourself"
        ) from None
    except (requests.exceptions.RequestException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataUnavailable(f"cannot download {url}: {reason}") from None


def fetch(source: DataSource, files: Iterable[str] | None = None, *, force: bool = False,
          timeout: float = 60.0) -> Path:
    """Download ``source``'s files into the cache and verify their checksums.

    Parameters
    ----------
    source
        The data source.
    files
        Relative paths to fetch (default: all).
    force
        Download again even if a verified copy is already in the cache.
    timeout
        Seconds to wait for the server before giving up.

    Returns
    -------
    Path
        The cache directory ``cache_dir() / source.subdir``.

    Raises
    ------
    DataError
        A downloaded file's checksum does not match (it is deleted, not kept), a file has no
        known URL, or a file has no known checksum (refused unless
        ``MOEBENCH_ALLOW_UNVERIFIED=1``, see :func:`allow_unverified`).
    DataUnavailable
        The server cannot be reached.
    """
    root = cache_dir() / source.subdir
    wanted = source.select(files)
    todo = []
    for f in wanted:
        path = root / f.relpath
        if not force and path.is_file():
            if check_files(source, root, [f.relpath])[f.relpath] != "mismatch":
                continue
        todo.append(f)
    if not todo:
        return root
    _refuse_unverified(source, todo, root, "download")
    direct = [f for f in todo if f.url]
    rest = [f for f in todo if not f.url]
    if rest and source.archive is None:
        raise DataError(
            f"{source.name}: no download URL is known for {', '.join(f.relpath for f in rest)}; "
            f"put the files in {root} or in ${DATA_ENV}/{source.subdir}"
        )
    for f in direct:
        assert f.url is not None
        dest = root / f.relpath
        if dest.exists():  # a stale or corrupt copy (or --force): pooch would keep a match
            dest.unlink()
        _download(f.url, dest, f.md5, timeout)
    if rest:
        assert source.archive is not None
        _fetch_archive(source, source.archive, root, rest, timeout)
    return root


def _fetch_archive(source: DataSource, archive: Archive, root: Path,
                   files: Sequence[DataFile], timeout: float) -> None:
    """Download the verified tarball (kept in the cache) and extract ``files`` from it."""
    tarball = cache_dir() / archive.filename
    _download(archive.url, tarball, archive.md5, timeout)  # no download if already verified
    members = {archive.member_prefix + f.relpath: f for f in files}
    found: set[str] = set()
    try:
        with tarfile.open(tarball, "r:*") as tf:
            for member in tf:
                f = members.get(member.name)
                if f is None or not member.isfile():
                    continue
                src = tf.extractfile(member)
                assert src is not None
                _extract(source, src, root / f.relpath, f, f"{member.name} in {tarball}")
                found.add(member.name)
    except DECOMPRESSION_ERRORS as exc:
        raise DataError(
            f"{source.name}: cannot extract {tarball} ({type(exc).__name__}: {exc}): checksum "
            f"mismatch for {tarball}? Run `moebench data fetch {source.name} --force`"
        ) from None
    absent = sorted(set(members) - found)
    if absent:
        raise DataError(f"{source.name}: {tarball} lacks {', '.join(absent)}")


def _extract(source: DataSource, src: Any, dest: Path, f: DataFile, label: str) -> None:
    """Copy one archive member to ``dest`` through a temporary file, checking its md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
        if f.md5 is not None and h.hexdigest() != f.md5:
            raise DataError(f"{source.name}: checksum mismatch for {label}: md5 "
                            f"{h.hexdigest()}, expected {f.md5}; run `moebench data fetch "
                            f"{source.name} --force`")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------- helpers for loaders


def fixed_split(n: int, test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random train/test split of ``n`` rows, independent of the run's seed.

    Parameters
    ----------
    n
        Number of rows.
    test_fraction
        Fraction of rows in the test split (at least one row in each split).
    split_seed
        Seed of ``np.random.default_rng``; the same seed gives the same split everywhere.

    Returns
    -------
    tuple of ndarray
        Sorted row indices of the training and the test split.
    """
    if n < 2:
        raise DataError(f"cannot split {n} row(s) into a training and a test split")
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    perm = np.random.default_rng(split_seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def subsample(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of ``size`` of ``n`` rows drawn without replacement (``None``: all)."""
    if size is None or size >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


@dataclass(frozen=True)
class Standardized:
    """Arrays standardised with training statistics, and the statistics."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float
    y_scale: float


def standardize(X_train: np.ndarray, X_test: np.ndarray, y_train: np.ndarray,
                y_test: np.ndarray, *, inputs: bool = True, target: bool = True
                ) -> Standardized:
    """Centre and scale inputs and target with the **training** mean and standard deviation.

    Constant training columns keep scale 1. With ``inputs``/``target`` false the corresponding
    arrays are returned unchanged (mean 0, scale 1), so ``y_original = y * y_scale + y_mean``
    holds in every case.
    """
    d = X_train.shape[1]
    x_mean, x_scale = np.zeros(d), np.ones(d)
    if inputs:
        x_mean = X_train.mean(axis=0)
        x_scale = X_train.std(axis=0)
        x_scale[~(x_scale > 0)] = 1.0
        X_train, X_test = (X_train - x_mean) / x_scale, (X_test - x_mean) / x_scale
    y_mean, y_scale = 0.0, 1.0
    if target:
        y_mean = float(y_train.mean())
        y_scale = float(y_train.std()) or 1.0
        y_train, y_test = (y_train - y_mean) / y_scale, (y_test - y_mean) / y_scale
    return Standardized(X_train, X_test, y_train, y_test, x_mean, x_scale, y_mean, y_scale)
