"""Weighted sums of products of a chunk's rows: the native kernel and its torch reference.

:func:`weighted_sums` forms each product ``z_a z_b`` in a vector register and feeds it straight
into a register tile of accumulators (weight rows by products, one SIMD lane per sample), so a
block of samples is read from the L1 cache once per tile and nothing per sample is written;
:func:`weighted_sums_torch` is the same sums as a torch expression (materialising the products),
the reference the tests hold the native kernel to and the path on other devices and dtypes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import torch

from .library import native_library, native_supported
from .ones import ones_row
from .pairs import Pairs

__all__ = ["Term", "weighted_sums", "weighted_sums_torch"]


def weighted_sums_torch(weights: torch.Tensor, Z: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """``out[j, p] = sum_c weights[j, c] z_{a_p}[c] z_{b_p}[c]``, materialising the products.

    The reference that :func:`weighted_sums` must equal, and its path on other devices.

    Parameters
    ----------
    weights
        ``(m, c)`` weight rows.
    Z
        ``(D, c)`` chunk.
    pairs
        The products (index ``D``: a row of ones).

    Returns
    -------
    torch.Tensor
        ``(m, len(pairs))``.
    """
    Zx = torch.cat([Z, ones_row(Z.shape[1], Z)[None]])
    return weights @ torch.cat([Zx[a0:a1] * Zx[b0:b1] for a0, a1, b0, b1 in pairs.runs()]).T


#: A term of :func:`weighted_sums`: ``(weights, pairs)``, the weights an ``(m, c)`` tensor or a
#: sequence of them whose rows are taken in order.
Term = tuple["torch.Tensor | Sequence[torch.Tensor]", Pairs]
_MAX_TERMS = 8


def _rows(weights: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [weights] if isinstance(weights, torch.Tensor) else list(weights)


def weighted_sums(Z: torch.Tensor, terms: Sequence[Term],
                  out: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """Weighted sums of products of a chunk's rows, for several terms in one pass over ``Z``.

    Parameters
    ----------
    Z
        ``(D, c)`` chunk (rows may be strided views of a larger buffer).
    terms
        ``(weights, pairs)`` per term: ``(m, c)`` weight rows (or a sequence of such tensors,
        their rows taken in order, so that rows from several buffers form one term) and the
        products ``z_a z_b`` to weight (:class:`Pairs`; index ``D`` is a row of ones). At most
        8 terms.
    out
        Accumulators ``(m, len(pairs))`` per term (``None`` entries, or no list: zeros); the sums
        are added to them.

    Returns
    -------
    list of torch.Tensor
        Per term ``out[t][j, p] += sum_c weights[j, c] z_{a_p}[c] z_{b_p}[c]``.

    Notes
    -----
    CPU float64/float32 tensors go through the compiled kernel (threads:
    ``torch.get_num_threads()``), which reads each block of ``Z`` once for all terms; everything
    else through :func:`weighted_sums_torch`.
    """
    D, c = Z.shape
    if len(terms) > _MAX_TERMS:
        raise ValueError(f"at most {_MAX_TERMS} terms per call, got {len(terms)}")
    outs: list[torch.Tensor] = []
    parts: list[list[torch.Tensor]] = []
    for t, (weights, pairs) in enumerate(terms):
        rows = _rows(weights)
        for w in rows:
            if w.ndim != 2 or w.shape[1] != c:
                raise ValueError(f"term {t}: weights of shape {tuple(w.shape)}, Z has {c} columns")
        if max(pairs.a + pairs.b, default=0) > D or min(pairs.a + pairs.b, default=0) < 0:
            raise ValueError(f"term {t}: pairs index rows {min(pairs.a + pairs.b)} to "
                             f"{max(pairs.a + pairs.b)}; Z has {D} rows (+ the row of ones)")
        m = sum(w.shape[0] for w in rows)
        acc = out[t] if out is not None and out[t] is not None else None
        if acc is not None and tuple(acc.shape) != (m, len(pairs)):
            raise ValueError(f"term {t}: out has shape {tuple(acc.shape)}, the sums "
                             f"{(m, len(pairs))}")
        outs.append(rows[0].new_zeros(m, len(pairs)) if acc is None else acc)
        parts.append(rows)
    fn = _native_fn(Z, [w for rows in parts for w in rows], outs)
    if fn is None:
        for rows, (_, pairs), acc in zip(parts, terms, outs, strict=True):
            acc.add_(weighted_sums_torch(torch.cat(rows), Z, pairs))
        return outs
    if Z.stride(1) != 1:
        Z = Z.contiguous()
    parts = [[w if w.stride(1) == 1 else w.contiguous() for w in rows] for rows in parts]
    item = Z.element_size()
    row_ptrs = [w.data_ptr() + j * w.stride(0) * item
                for rows in parts for w in rows for j in range(w.shape[0])]
    ng = len(terms)
    idx = [pairs.indices(Z.device) for _, pairs in terms]
    ones = ones_row(c, Z)  # held until the call returns (another thread may grow the cache)
    ptr = ctypes.c_void_p
    rc = fn(
        c, ng,
        (ctypes.c_int * ng)(*[sum(w.shape[0] for w in rows) for rows in parts]),
        (ptr * len(row_ptrs))(*row_ptrs),
        (ctypes.c_int * ng)(*[len(pairs) for _, pairs in terms]),
        (ptr * ng)(*[a.data_ptr() for a, _ in idx]),
        (ptr * ng)(*[b.data_ptr() for _, b in idx]),
        (ptr * ng)(*[o.data_ptr() for o in outs]),
        Z.data_ptr(), Z.stride(0), D, ones.data_ptr(), torch.get_num_threads(),
    )
    if rc == -1:
        raise MemoryError("moebench's native kernel could not allocate its scratch memory")
    if rc != 0:
        raise RuntimeError(f"moebench's native kernel refused the call (code {rc})")
    return outs


def _native_fn(Z: torch.Tensor, weights: list[torch.Tensor], outs: list[torch.Tensor]) -> Any:
    """The compiled function for these tensors, or ``None`` (torch expression instead)."""
    dt = Z.dtype
    tensors = [Z, *weights, *outs]
    if (any(t.dtype != dt or t.device != Z.device or t.requires_grad for t in tensors)
            or any(not o.is_contiguous() for o in outs) or not native_supported(Z.device, dt)):
        return None
    name = "moebench_sums_double" if dt == torch.float64 else "moebench_sums_float"
    return getattr(native_library(), name)


