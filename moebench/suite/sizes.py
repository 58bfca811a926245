"""Memory sizes written as people write them: ``4096``, ``"512MB"``, ``"4 GiB"``.

The suite's ``memory_limit`` is checked with :func:`parse_size` when the suite is parsed; the
executors apply it (:mod:`moebench.execution.limits`) and name it with :func:`format_size`.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: int | float | str) -> int:
    """Bytes from ``4096``, ``"512MB"``, ``"4 GiB"`` (decimal and binary units).

    Parameters
    ----------
    value
        A number of bytes, or a number followed by a unit (``k``, ``MB``, ``GiB``, ...).

    Returns
    -------
    int
        The size in bytes.

    Raises
    ------
    ValueError
        For anything else, saying which forms are accepted.
    """
    if isinstance(value, bool):
        raise ValueError("a memory size must be a number of bytes or a string like '4GiB'")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot read {value!r} as a memory size; write e.g. 4096, "
                             "'512MB' or '4GiB'")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = number * _UNITS[unit]
    if not (size >= 1 and size < 2**62):
        raise ValueError(f"memory size {value!r} must be at least one byte")
    return int(size)


def format_size(size: int) -> str:
    """``4294967296`` -> ``'4 GiB'``.

    Parameters
    ----------
    size
        A number of bytes.

    Returns
    -------
    str
        The size in the largest binary unit it reaches, to three significant digits.
    """
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size} B"
