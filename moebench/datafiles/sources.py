"""What a data source is: its files (checksums, URLs), the tarball that may hold them, and where
a Debian package installs them (:class:`DataSource`, :class:`DataFile`, :class:`Archive`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


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
