"""Where real datasets' files come from: locating, verifying and downloading them.

A dataset plugin that reads files declares a :class:`DataSource`: the files it needs (relative
to the source's sub-directory), their published checksums and canonical URLs. :func:`locate`
finds a directory holding all of them (an explicit path, ``$MOEBENCH_DATA``, the cache, a Debian
package), downloading missing files into the cache when it may; :func:`verify` and
:func:`reading` check the files a loader reads against their checksums. Files are read in their
original formats, never converted copies.

What lives where (every public name is re-exported here: ``from moebench.datafiles import X``):

- ``sources``: :class:`DataSource`, :class:`DataFile`, :class:`Archive` (what a source is).
- ``places``: ``$MOEBENCH_DATA``, the cache, offline / unverified switches, :func:`search_places`.
- ``archives``: :data:`DECOMPRESSION_ERRORS` and extracting one tarball member, md5 checked.
- ``checksums``: :func:`file_md5`, :func:`check_files`, :func:`verify`, :func:`reading`, and the
  refusal of files without a known checksum.
- ``download``: :func:`fetch`, downloads into the cache through pooch (``file://`` mirrors too).
- ``lookup``: :func:`locate` (search order, download fallback), :func:`status` (``data list``).
- ``preprocess``: :func:`fixed_split`, :func:`subsample`, :func:`standardize` for loaders.

Imports go one way: sources <- places <- checksums <- download <- lookup (archives below
checksums; preprocess alone); the package imports only :mod:`moebench.errors` from moebench.
"""

from __future__ import annotations

from .archives import DECOMPRESSION_ERRORS
from .checksums import (
    FileStatus,
    check_files,
    file_md5,
    mismatch_message,
    reading,
    verify,
)
from .download import fetch
from .lookup import SourceStatus, locate, missing_message, status
from .places import (
    ALLOW_UNVERIFIED_ENV,
    CACHE_ENV,
    DATA_ENV,
    OFFLINE_ENV,
    allow_unverified,
    cache_dir,
    data_dir,
    offline,
    search_places,
)
from .preprocess import Standardized, fixed_split, standardize, subsample
from .sources import Archive, DataFile, DataSource

__all__ = [
    "ALLOW_UNVERIFIED_ENV",
    "CACHE_ENV",
    "DATA_ENV",
    "DECOMPRESSION_ERRORS",
    "OFFLINE_ENV",
    "Archive",
    "DataFile",
    "DataSource",
    "FileStatus",
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
    "missing_message",
    "offline",
    "reading",
    "search_places",
    "standardize",
    "status",
    "subsample",
    "verify",
]
