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

:func:`verify` checks files against their md5 (streamed, cached within the process by path,
size and modification time). Files without an embedded checksum are checked against a
``MANIFEST.tsv`` (columns path, size, md5, sha256) in the parent of the directory when there is
one, as in ``shared/data``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import DataError, DataUnavailable, MoebenchError

__all__ = [
    "Archive",
    "DataFile",
    "DataSource",
    "SourceStatus",
    "Standardized",
    "cache_dir",
    "check_files",
    "data_dir",
    "fetch",
    "file_md5",
    "fixed_split",
    "locate",
    "offline",
    "search_places",
    "standardize",
    "status",
    "subsample",
    "verify",
]

DATA_ENV = "MOEBENCH_DATA"
CACHE_ENV = "MOEBENCH_CACHE"
OFFLINE_ENV = "MOEBENCH_OFFLINE"
_CHUNK = 1 << 20

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
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


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
            return root, label
    if download is None:
        download = not offline()
    problem = ""
    if download and explicit is None:
        try:
            root = fetch(source, [f.relpath for f in needed])
            return root, "cache (downloaded)"
        except (MoebenchError, OSError, ValueError) as exc:
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
    lines = [f"{source.name}: {len(best_missing)} of {len(needed)} data files not found: {shown}"]
    if best_root is not None:
        lines.append(f"  (the closest copy, {best_root}, lacks only these)")
    lines.append("  searched:")
    for label, root in places:
        where = str(root) if root is not None else f"(not set: ${DATA_ENV} is unset)"
        lines.append(f"    {label}: {where}")
    if problem:
        lines.append(f"  {problem}")
    if places and places[0][0] == "explicit path":
        lines.append(f"  put these files in {places[0][1]}, or drop the dataset's `path` "
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

    The cache key is the resolved path, size and modification time, so a replaced file is
    hashed again.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, decompressed)
    with _md5_lock:
        if key in _md5_cache:
            return _md5_cache[key]
    h = hashlib.md5()
    opener = gzip.open if decompressed else open
    with opener(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
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


def check_files(source: DataSource, root: str | os.PathLike,
                files: Iterable[str] | None = None) -> dict[str, FileStatus]:
    """Check each file's md5 against the embedded checksum (or the folder's MANIFEST.tsv).

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
        elif f.content_md5 and file_md5(path, decompressed=True) == f.content_md5:
            result[f.relpath] = "ok-content"
        else:
            result[f.relpath] = "mismatch"
    return result


def verify(source: DataSource, root: str | os.PathLike, files: Iterable[str] | None = None,
           ) -> bool:
    """Check the files a loader is about to read; ``True`` when every checksum matched.

    Raises
    ------
    DataError
        A file declared ``exact`` has other bytes than published (a corrupt or different copy).
        Mismatches of non-exact files (re-saved spreadsheets) give a warning instead.
    """
    statuses = check_files(source, root, files)
    bad = [r for r, s in statuses.items() if s == "mismatch"]
    fatal = [r for r in bad if source.file(r).exact]
    if fatal:
        details = "; ".join(
            f"{r}: md5 {file_md5(Path(root) / r)}, expected {_expected(source, Path(root), r)}"
            for r in fatal
        )
        raise DataError(
            f"{source.name}: checksum mismatch in {Path(root)}: {details}. The copy is corrupt or "
            f"not the published file; delete it and run `moebench data fetch {source.name}`"
        )
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


def _expected(source: DataSource, root: Path, relpath: str) -> str | None:
    return source.file(relpath).md5 or _manifest(root, source.subdir).get(relpath)


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


def _download(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Stream ``url`` to ``dest`` through a temporary ``.part`` file, checking the md5.

    Nothing is left at ``dest`` (or in the ``.part`` file) when the download fails or the
    checksum does not match.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    h = hashlib.md5()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "moebench"})
        try:
            with (os.fdopen(fd, "wb") as out,
                  urllib.request.urlopen(request, timeout=timeout) as r):
                for chunk in iter(lambda: r.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataUnavailable(f"cannot download {url}: {reason}") from None
        if md5 is not None and h.hexdigest() != md5:
            raise DataError(
                f"checksum mismatch for {url}: md5 {h.hexdigest()}, expected {md5}; "
                "the download was discarded"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
        A downloaded file's checksum does not match (it is deleted, not kept), or a file has
        no known URL.
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
    direct = [f for f in todo if f.url]
    rest = [f for f in todo if not f.url]
    if rest and source.archive is None:
        raise DataError(
            f"{source.name}: no download URL is known for {', '.join(f.relpath for f in rest)}; "
            f"put the files in {root} or in ${DATA_ENV}/{source.subdir}"
        )
    for f in direct:
        assert f.url is not None
        _download(f.url, root / f.relpath, f.md5, timeout)
    if rest:
        assert source.archive is not None
        _fetch_archive(source, source.archive, root, rest, timeout)
    return root


def _fetch_archive(source: DataSource, archive: Archive, root: Path,
                   files: Sequence[DataFile], timeout: float) -> None:
    tarball = cache_dir() / archive.filename
    if not (tarball.is_file() and file_md5(tarball) == archive.md5):
        _download(archive.url, tarball, archive.md5, timeout)
    members = {archive.member_prefix + f.relpath: f for f in files}
    found: set[str] = set()
    with tarfile.open(tarball, "r:*") as tf:
        for member in tf:
            f = members.get(member.name)
            if f is None or not member.isfile():
                continue
            src = tf.extractfile(member)
            assert src is not None
            dest = root / f.relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            try:
                h = hashlib.md5()
                with os.fdopen(fd, "wb") as out:
                    for chunk in iter(lambda: src.read(_CHUNK), b""):  # noqa: B023
                        h.update(chunk)
                        out.write(chunk)
                if f.md5 is not None and h.hexdigest() != f.md5:
                    raise DataError(f"{source.name}: {member.name} in {tarball} has md5 "
                                    f"{h.hexdigest()}, expected {f.md5}")
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            found.add(member.name)
    absent = sorted(set(members) - found)
    if absent:
        raise DataError(f"{source.name}: {tarball} lacks {', '.join(absent)}")


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
