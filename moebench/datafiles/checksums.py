"""Checking data files against their checksums before a loader reads them.

**Checksums are required.** Every file moebench downloads must have a known checksum: its own
published md5, or, for members of an :class:`~moebench.datafiles.Archive`, the archive's md5 (a
member is also checked against its own md5 when one is declared). A file without one is
*refused*: :func:`~moebench.datafiles.fetch` raises :class:`~moebench.errors.DataError` before
downloading it, and a file in the cache without one is not used (:func:`refuse_unverified`). The
explicit opt-in ``MOEBENCH_ALLOW_UNVERIFIED=1`` accepts such files (pooch logs their sha256).
Files a user provides (explicit path, ``$MOEBENCH_DATA``) are the user's responsibility and are
read even when no checksum is known.

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
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pooch

from ..errors import DataError, DataUnavailable
from .archives import COPY_CHUNK, DECOMPRESSION_ERRORS
from .places import ALLOW_UNVERIFIED_ENV, DATA_ENV, allow_unverified, cache_dir
from .sources import DataFile, DataSource

#: Result of checking one file: ``ok`` (md5 matches), ``ok-content`` (a re-packed ``.gz`` whose
#: decompressed bytes match), ``mismatch``, ``unknown`` (no checksum to compare) or ``missing``.
FileStatus = Literal["ok", "ok-content", "mismatch", "unknown", "missing"]

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
            for chunk in iter(lambda: fh.read(COPY_CHUNK), b""):
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


def refuse_unverified(source: DataSource, files: Sequence[DataFile], root: Path,
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
