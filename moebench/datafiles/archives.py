"""Compressed data: the errors a truncated or corrupt file raises while being decompressed, and
copying one tarball member into place through a temporary file with its md5 checked."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ..errors import DataError
from .sources import DataFile, DataSource

#: Bytes read at a time when copying or hashing a file.
COPY_CHUNK = 1 << 20

#: Exceptions that decompressors and archive readers raise on a truncated or corrupt file.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile, tarfile.TarError,
    lzma.LZMAError,
)


def extract_member(source: DataSource, src: Any, dest: Path, f: DataFile, label: str) -> None:
    """Copy one archive member to ``dest`` through a temporary file, checking its md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: src.read(COPY_CHUNK), b""):
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
