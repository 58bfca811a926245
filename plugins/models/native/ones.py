"""The row of ones the native kernels read for the index ``D`` of :class:`~.pairs.Pairs`.

One buffer per dtype and device, shared by every call and replaced by a longer one (at least
``2^16`` ones) when a chunk outgrows it. A caller holds the buffer it was given until its native
call returns, so that another thread growing the buffer meanwhile cannot free it.
"""

from __future__ import annotations

import torch

__all__ = ["ones_buffer", "ones_row"]

_ONES: dict[tuple[torch.dtype, str], torch.Tensor] = {}


def ones_row(n: int, like: torch.Tensor) -> torch.Tensor:
    """``n`` ones of ``like``'s dtype and device, a view of the shared buffer (grown if shorter).

    Parameters
    ----------
    n
        The ones needed.
    like
        A tensor of the dtype and device wanted.

    Returns
    -------
    torch.Tensor
        ``(n,)`` ones.
    """
    key = (like.dtype, str(like.device))
    buf = _ONES.get(key)
    if buf is None or buf.numel() < n:
        buf = _ONES[key] = torch.ones(max(n, 1 << 16), dtype=like.dtype, device=like.device)
    return buf[:n]


def ones_buffer(n: int, like: torch.Tensor) -> torch.Tensor:
    """The shared buffer itself, at least ``n`` ones (no view taken: for a data pointer)."""
    buf = _ONES.get((like.dtype, str(like.device)))
    if buf is None or buf.numel() < n:
        buf = ones_row(n, like)
    return buf
