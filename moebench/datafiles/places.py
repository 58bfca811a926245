"""Where data files may be: ``$MOEBENCH_DATA``, the download cache, a Debian package's folder,
and the environment switches (offline, unverified downloads) that decide what may be fetched."""

from __future__ import annotations

import os
from pathlib import Path

from .sources import DataSource

DATA_ENV = "MOEBENCH_DATA"
CACHE_ENV = "MOEBENCH_CACHE"
OFFLINE_ENV = "MOEBENCH_OFFLINE"
ALLOW_UNVERIFIED_ENV = "MOEBENCH_ALLOW_UNVERIFIED"


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
    checksum is not known (see :mod:`moebench.datafiles.checksums`).
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
