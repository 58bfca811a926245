"""Downloading a source's files into the cache (:func:`fetch`), through pooch.

Downloads go through `pooch <https://www.fatiando.org/pooch>`_ (``pooch.retrieve`` with a
``known_hash``): a file is streamed to a temporary file next to its destination and moved into
place only when its md5 matches, so a failed or corrupt download leaves nothing behind. Besides
pooch's protocols (``http``, ``https``, ``ftp``, ...) ``file://`` URLs are accepted, for a local
mirror. A file without a known checksum is refused (:mod:`moebench.datafiles.checksums`).
"""

from __future__ import annotations

import shutil
import tarfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pooch

from ..errors import DataError, DataUnavailable
from .archives import COPY_CHUNK, DECOMPRESSION_ERRORS, extract_member
from .checksums import check_files, refuse_unverified
from .places import DATA_ENV, cache_dir
from .sources import Archive, DataFile, DataSource


def _file_downloader(url: str, output_file: Any, pooch_obj: Any = None) -> None:
    """A pooch downloader for ``file://`` URLs (a local mirror)."""
    parsed = urllib.parse.urlparse(url)
    src = Path(urllib.request.url2pathname(parsed.path))
    with open(src, "rb") as fin:
        if hasattr(output_file, "write"):
            shutil.copyfileobj(fin, output_file, COPY_CHUNK)
        else:
            with open(output_file, "wb") as out:
                shutil.copyfileobj(fin, out, COPY_CHUNK)


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
    refuse_unverified(source, todo, root, "download")
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
                extract_member(source, src, root / f.relpath, f, f"{member.name} in {tarball}")
                found.add(member.name)
    except DECOMPRESSION_ERRORS as exc:
        raise DataError(
            f"{source.name}: cannot extract {tarball} ({type(exc).__name__}: {exc}): checksum "
            f"mismatch for {tarball}? Run `moebench data fetch {source.name} --force`"
        ) from None
    absent = sorted(set(members) - found)
    if absent:
        raise DataError(f"{source.name}: {tarball} lacks {', '.join(absent)}")
