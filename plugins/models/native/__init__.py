"""Weighted sums of products of a chunk's rows, generated in registers (a native kernel).

Every EM iteration of a regression MoE accumulates weighted Grams ``sum_c w_jc z_c z_c^T``: the
``k`` expert Grams of ``[f; y]`` weighted by the responsibilities and the ``k (k - 1) / 2`` gate
Hessian blocks. Written in torch this is a GEMM ``W @ Q^T`` against the ``D (D + 1) / 2``
materialised products ``Q`` of the chunk: at ``D = 12`` that writes and reads back 78 numbers per
sample, and the GEMM's shape (``m`` x chunk x 78) keeps MKL at a third of its peak.
:func:`weighted_sums` instead forms each product ``z_a z_b`` in a vector register and feeds it
straight into a register tile of ``6 x 4`` accumulators (6 weight rows, 4 products, one SIMD lane
per sample), so a block of samples is read from the L1 cache once per tile and nothing per sample
is written. A row of ones among the rows (:class:`Pairs`) turns the same kernel into plain
weighted sums (the gate gradient, the masses, the log-likelihood).

The C source is compiled once per machine with the system's C compiler (``$CC``, else ``cc``;
``-O3 -march=native``, OpenMP when available) into the moebench cache and loaded with
:mod:`ctypes`. Where that is impossible (no compiler, a device other than the CPU, a dtype other
than float32/float64, ``MOEBENCH_NATIVE=never``) the same sums are computed by the torch
expression :func:`weighted_sums_torch`, which the tests hold the native kernel to.

What lives where:

* ``common.h``, ``sums.c``, ``fused.c``: the C source (package data);
* :mod:`.source`: the source text assembled from those files (the text the build hashes);
* :mod:`.library`: compiling, caching and loading the library; ``MOEBENCH_NATIVE``;
* :mod:`.pairs`: :class:`Pairs`, the products a weighted sum takes;
* :mod:`.ones`: the shared row of ones the kernels read;
* :mod:`.sums`: :func:`weighted_sums` and its torch reference :func:`weighted_sums_torch`;
* :mod:`.fused`: :class:`FusedPass`, the fused E-step / gate kernel, and its exp and log.
"""

from __future__ import annotations

from .fused import FUSED_MAX_EXPERTS, FusedPass, fused_supported, vector_exp, vector_log
from .library import native_available, native_library, native_mode, native_supported
from .pairs import Pairs
from .sums import Term, weighted_sums, weighted_sums_torch

__all__ = ["FUSED_MAX_EXPERTS", "FusedPass", "Pairs", "Term", "fused_supported",
           "native_available", "native_library", "native_mode", "native_supported", "vector_exp",
           "vector_log", "weighted_sums", "weighted_sums_torch"]
