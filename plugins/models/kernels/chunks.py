"""Row chunks of ``(X, y)`` as transposed buffers (:class:`RowChunks`), and the transposed copy
of in-memory data kept with it across passes (:func:`cached_row_chunks`)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import numpy as np
import torch

from ..caching import data_cache

__all__ = ["DEFAULT_CHUNK_SIZE", "RowChunks", "TRANSPOSED_CACHE_MAX_BYTES", "cached_row_chunks"]

#: Rows per chunk: large enough that the fixed cost of a (compiled) kernel call, about 0.1 ms, is
#: small against the chunk's work, small enough that a chunk's rows of small ``d`` stay in the
#: last-level cache.
DEFAULT_CHUNK_SIZE = 65536


class RowChunks:
    """Row chunks of ``(X, y)`` as transposed ``(d' + 1, c)`` buffers ``[x; 1?; y]``.

    Parameters
    ----------
    X
        Inputs ``(n, d)``: a torch tensor, a numpy array or a read-only ``np.memmap`` (chunks are
        copied to ``device`` one at a time, so ``n`` may exceed the memory).
    y
        Targets ``(n,)``, same kinds; ``None`` for gate-only passes (the last row is then zero).
    chunk_size
        Rows per chunk.
    intercept
        Append a row of ones after the features (the model's intercept column).
    device, dtype
        Where and in which precision the chunks are produced (default: ``X``'s for tensors, CPU
        float64 for arrays).
    transposed_copy
        Build the whole ``(d' + 1, n)`` transposed copy once and yield views of it, so that
        repeated passes (EM iterations, see :func:`cached_row_chunks`) skip the per-chunk
        transposition; ``X`` and ``y`` are not kept.

    Notes
    -----
    Iteration yields ``(start, stop, Z)``; ``Z`` is a view of a buffer reused by the next chunk
    (or of the transposed copy), so consumers must neither keep nor modify it.
    """

    def __init__(
        self,
        X: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray | None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        intercept: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        transposed_copy: bool = False,
    ):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-d, got shape {tuple(X.shape)}")
        if y is not None and (y.ndim != 1 or y.shape[0] != X.shape[0]):
            raise ValueError(f"y must be 1-d with {X.shape[0]} rows, got {tuple(y.shape)}")
        self.X, self.y = X, y
        self.chunk_size = int(chunk_size)
        self.intercept = bool(intercept)
        if isinstance(X, torch.Tensor):
            self.device = torch.device(device) if device is not None else X.device
            self.dtype = dtype or X.dtype
        else:
            self.device = torch.device(device or "cpu")
            self.dtype = dtype or torch.float64
        self.n_rows = int(X.shape[0])
        self.n_features = int(X.shape[1]) + int(self.intercept)
        self._full: torch.Tensor | None = None
        if transposed_copy:
            with torch.no_grad():
                self._full = self._chunk_buffer(self.n_rows)
                for s, e, Z in self._copied_chunks():
                    self._full[:, s:e].copy_(Z)
            self.X = self.y = None  # the copy replaces them; a cache must not keep them alive

    def _rows(self, a: torch.Tensor | np.ndarray, s: int, e: int) -> torch.Tensor:
        part = a[s:e]
        if not isinstance(part, torch.Tensor):
            part = torch.from_numpy(np.array(part))  # a writable copy of the chunk
        return part.to(self.device, self.dtype, non_blocking=True)

    def _chunk_buffer(self, columns: int) -> torch.Tensor:
        buf = torch.zeros(self.n_features + 1, columns, dtype=self.dtype, device=self.device)
        if self.intercept:
            buf[self.n_features - 1].fill_(1.0)
        return buf

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        if self._full is not None:
            if self.n_rows <= self.chunk_size:
                yield 0, self.n_rows, self._full
                return
            for s in range(0, self.n_rows, self.chunk_size):
                e = min(self.n_rows, s + self.chunk_size)
                yield s, e, self._full[:, s:e]
            return
        yield from self._copied_chunks()

    def _copied_chunks(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        d = int(self.X.shape[1])
        buf = self._chunk_buffer(min(self.chunk_size, self.n_rows))
        for s in range(0, self.n_rows, self.chunk_size):
            e = min(self.n_rows, s + self.chunk_size)
            Z = buf[:, : e - s]
            Z[:d].copy_(self._rows(self.X, s, e).T)
            if self.y is not None:
                Z[-1].copy_(self._rows(self.y, s, e))
            yield s, e, Z


#: In-memory data up to this size is cached as one transposed copy by :func:`cached_row_chunks`.
TRANSPOSED_CACHE_MAX_BYTES = 1 << 31
#: The :class:`~moebench_plugins.models.caching.DataCache` entry of an input tensor ``X`` that
#: holds its transposed copies, one per targets ``y``: ``id(y) -> (weakref(y) or None, state,
#: RowChunks)`` with ``state = (X._version, y._version, chunk_size, intercept)``.
TRANSPOSED_COPIES = "transposed_copies"


def cached_row_chunks(
    X: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray | None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    intercept: bool = False,
) -> RowChunks:
    """:class:`RowChunks` of in-memory tensors, transposed once and reused while they live.

    An EM run makes several passes per iteration over the same ``(X, y)``; the transposed copy
    ``[X^T; 1; y]`` (one more copy of the data) is cached per ``(X, y)`` pair, dropped when ``X``
    is garbage-collected and rebuilt when either tensor was modified in place. Arrays (memory
    maps among them) and data over :data:`TRANSPOSED_CACHE_MAX_BYTES` are chunked on the fly.
    """
    tensors = isinstance(X, torch.Tensor) and (y is None or isinstance(y, torch.Tensor))
    if not tensors or X.ndim != 2:
        return RowChunks(X, y, chunk_size=chunk_size, intercept=intercept)
    nbytes = (X.shape[1] + 2) * X.shape[0] * X.element_size()
    if nbytes > TRANSPOSED_CACHE_MAX_BYTES or X.requires_grad:
        return RowChunks(X, y, chunk_size=chunk_size, intercept=intercept)
    state = (X._version, None if y is None else y._version, chunk_size, intercept)
    cache = data_cache(X)
    copies = cache.get(TRANSPOSED_COPIES)
    if copies is None:
        copies = cache[TRANSPOSED_COPIES] = {}
    hit = copies.get(id(y))
    if hit is not None and (y is None or hit[0]() is y) and hit[1] == state:
        return hit[2]
    chunks = RowChunks(X, y, chunk_size=chunk_size, intercept=intercept, transposed_copy=True)
    copies[id(y)] = (weakref.ref(y) if y is not None else None, state, chunks)
    return chunks
