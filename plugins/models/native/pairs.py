"""Which products of a chunk's rows the weighted sums take (:class:`Pairs`), and their indices."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

__all__ = ["Pairs"]


@dataclass(frozen=True)
class Pairs:
    """Which products ``z_a z_b`` of a chunk's rows :func:`~.sums.weighted_sums` sums against.

    Attributes
    ----------
    a, b
        Row indices per product; the index ``D`` (one past the chunk's ``D`` rows) stands for a
        row of ones, so ``(a, D)`` gives plain weighted sums of row ``a`` and ``(D, D)`` the sums
        of the weights themselves.
    """

    a: tuple[int, ...]
    b: tuple[int, ...]

    @classmethod
    def packed(cls, D: int, *, ones: bool = False) -> Pairs:
        """The upper triangle ``a <= b < D`` row by row, then ``(D, D)`` with ``ones``."""
        return _packed_pairs(cls, D, ones)

    @classmethod
    def linear(cls, rows: int, D: int) -> Pairs:
        """``(a, D)`` for ``a < rows`` then ``(D, D)``: sums of ``w z_a``, then of ``w``."""
        return cls((*range(rows), D), (D,) * (rows + 1))

    def __len__(self) -> int:
        return len(self.a)

    def runs(self) -> list[tuple[int, int, int, int]]:
        """The products as slices ``z[a0:a1] * z[b0:b1]``: runs of consecutive pairs in which
        one index stays fixed (a slice of length one) and the other counts up."""
        out: list[tuple[int, int, int, int]] = []
        i, n = 0, len(self.a)
        while i < n:
            a, b = self.a[i], self.b[i]
            j = i + 1
            if j < n and self.a[j] == a and self.b[j] == b + 1:
                while j < n and self.a[j] == a and self.b[j] == b + (j - i):
                    j += 1
                out.append((a, a + 1, b, b + j - i))
            else:
                while j < n and self.b[j] == b and self.a[j] == a + (j - i):
                    j += 1
                out.append((a, a + j - i, b, b + 1))
            i = j
        return out

    def indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``int32`` index tensors on ``device`` (cached)."""
        return _pair_indices(self, str(device))


@functools.lru_cache(maxsize=32)
def _packed_pairs(cls: type[Pairs], D: int, ones: bool) -> Pairs:
    """:meth:`Pairs.packed`, built once per ``D``: a pass over ``D = 786`` gate inputs would
    otherwise spend a third of its time building the 309,000 index pairs in Python."""
    upper = torch.triu_indices(D, D)
    a, b = upper[0].tolist(), upper[1].tolist()
    if ones:
        a.append(D)
        b.append(D)
    return cls(tuple(a), tuple(b))


@functools.cache
def _pair_indices(pairs: Pairs, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`Pairs.indices`, built once per pairs and device."""
    return (torch.tensor(pairs.a, dtype=torch.int32, device=device),
            torch.tensor(pairs.b, dtype=torch.int32, device=device))
