"""The C source text of the native library, assembled from the package's ``.c``/``.h`` files.

The files are package data: ``common.h`` (the vector width, the register tile and the block of
samples, chosen for the instruction set the compiler targets), ``sums.c`` (the weighted-sums
kernel, written once over the token ``REAL`` and instantiated for ``double`` and ``float``) and
``fused.c`` (the fused E-step / gate kernel, float64). The text they give is the one the library
has always been built from, byte for byte: its hash names the cached build
(:mod:`~moebench_plugins.models.native.library`), so an unchanged source reuses the
libraries already compiled.

The vector width and the register tile of ``common.h`` follow the instruction set the compiler
targets: 64-byte vectors and 6 x 4 tiles (24 accumulators; measured 7-9% faster than 5 x 4 on the
fused passes of k = 4 experts, whose 6 Hessian rows then make one tile) with 32 vector registers
(AVX-512), narrower vectors and 3 x 3 tiles with 16 (AVX2, SSE). ``BLK`` samples per block: a
tile's weight and chunk rows of one block (13 x 256 doubles, 26 KB) fit a 32-48 KB L1 data cache.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["REALS", "SOURCE_FILES", "source"]

#: The C files, in the order they are concatenated.
SOURCE_FILES = ("common.h", "sums.c", "fused.c")
#: The types ``sums.c`` is instantiated for (its token ``REAL`` replaced), in this order.
REALS = ("double", "float")


def _read(name: str) -> str:
    """The text of the package's C file ``name``."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@functools.cache
def source() -> str:
    """The C source the library is compiled from (read once per process).

    Returns
    -------
    str
        ``common.h``, ``sums.c`` once per type of :data:`REALS` and ``fused.c``, each preceded by
        a newline.
    """
    head, template, fused = (_read(name) for name in SOURCE_FILES)
    return ("\n" + head + "".join("\n" + template.replace("REAL", real) for real in REALS)
            + "\n" + fused)
