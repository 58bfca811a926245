"""Responsibilities handed to a pass as a label function (:data:`LabelFn`): the blocks an E-step
kept (:class:`ChunkedLabels`) or the posterior recomputed per chunk (:func:`posterior_labels`)."""

from __future__ import annotations

import bisect
from collections.abc import Callable

import torch

from .compiling import chunk_kernel
from .spec import KernelSpec, _pass_inputs

__all__ = ["ChunkedLabels", "LabelFn", "posterior_labels"]

#: ``labels(start, stop, chunk) -> (k, c)`` soft labels of the rows ``start:stop`` (transposed).
LabelFn = Callable[[int, int, torch.Tensor], torch.Tensor]


class ChunkedLabels:
    """Responsibilities kept as the ``(k, c)`` blocks the E-step produced, a :data:`LabelFn`.

    The fused EM iteration stores its posterior this way instead of copying it into an
    ``(n, k)`` tensor; the gate passes over the same chunks read the blocks back.

    Parameters
    ----------
    n_rows
        Rows ``n`` the blocks cover once the pass is done.
    """

    def __init__(self, n_rows: int):
        self.n_rows = int(n_rows)
        self._starts: list[int] = []
        self._blocks: list[torch.Tensor] = []

    def put(self, start: int, block: torch.Tensor) -> None:
        """Store the ``(k, c)`` block of rows ``start:start + c`` (in increasing order)."""
        if self._starts and start < self._starts[-1] + self._blocks[-1].shape[1]:
            raise ValueError("blocks must be stored in increasing, non-overlapping order")
        if start < 0 or start + block.shape[1] > self.n_rows:
            raise ValueError(f"rows {start}:{start + block.shape[1]} lie outside 0:{self.n_rows}")
        self._starts.append(int(start))
        self._blocks.append(block)

    def __call__(self, start: int, stop: int, chunk: torch.Tensor | None = None) -> torch.Tensor:
        """The ``(k, stop - start)`` responsibilities of rows ``start:stop``."""
        if stop <= start:
            k = self._blocks[0].shape[0] if self._blocks else 0
            like = self._blocks[0] if self._blocks else torch.empty(0)
            return like.new_empty(k, 0)
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0 and self._starts[i] == start and self._blocks[i].shape[1] == stop - start:
            return self._blocks[i]
        parts = []
        pos = start
        while pos < stop:
            if i < 0 or i >= len(self._starts) or not (
                    self._starts[i] <= pos < self._starts[i] + self._blocks[i].shape[1]):
                raise IndexError(f"rows {pos}:{stop} were not stored")
            blk, s0 = self._blocks[i], self._starts[i]
            end = min(stop, s0 + blk.shape[1])
            parts.append(blk[:, pos - s0 : end - s0])
            pos, i = end, i + 1
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def to_tensor(self) -> torch.Tensor:
        """The ``(n, k)`` responsibilities as one tensor."""
        return self(0, self.n_rows).T


def posterior_labels(
    A: torch.Tensor, W: torch.Tensor, log_sigma: torch.Tensor, activation: str = "linear",
    *, n_rows: int = 0,
) -> LabelFn:
    """A :data:`LabelFn` recomputing the posterior at fixed parameters chunk by chunk.

    Used when the ``(n, k)`` responsibilities are not kept (streaming from disk): each gate pass
    recomputes them from the parameters of the E-step. ``n_rows``, the rows of the passes it
    serves, decides whether its kernel is compiled (:func:`chunk_kernel`).
    """
    k, d = A.shape
    spec = KernelSpec(k=k, n_features=d, activation=activation, per_sample=True)
    inputs: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def labels(start: int, stop: int, Z: torch.Tensor) -> torch.Tensor:
        key = (Z.device, Z.dtype)
        if key not in inputs:  # once per pass layout, not per chunk
            inputs[key] = _pass_inputs(A, W, log_sigma, *key, posterior=True, gate=False)
        with torch.no_grad():
            Rt, _, _ = chunk_kernel(spec, n_rows)(Z, *inputs[key], None)
        return Rt

    return labels
