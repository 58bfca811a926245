"""The sums a pass accumulates (:class:`_PassSums`), their layout, and the Gram matrices, expert
statistics and gate Newton system read from them."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..native import native_supported
from .chunks import RowChunks
from .spec import KernelSpec
from .stats import ExpertStats, GateStats

__all__: list[str] = []


@dataclass
class _PassSums:
    """Sums over samples of a kernel's rows (see :func:`~.elementwise._make_kernel`).

    ``grad``: the gate gradient rows of ``lin`` summed against ``f``, ``(k - 1, d')`` or
    ``(k - 1, d' + 1)`` (the last column unused); ``totals``: the sums of the other ``lin`` rows,
    ``(l', 1)``; ``grams``: the Grams of the chunk rows ``z`` (``[f; y]`` with expert statistics,
    else ``f``) weighted by the responsibilities (with expert statistics) and then, unless
    ``hess`` holds them, by the gate Hessian weights, packed ``(m, D (D + 1) / 2 + 1)`` (the last
    column: the sums of the weights) or stacked ``(m D, D)`` (the sums of the responsibilities
    apart, in ``mass``), as ``packed`` says; ``hess``: the gate Hessian Grams of ``f`` alone,
    packed ``(k (k - 1) / 2, d' (d' + 1) / 2)`` (the fused native pass).
    """

    packed: bool
    grad: torch.Tensor | None = None
    totals: torch.Tensor | None = None
    grams: torch.Tensor | None = None
    mass: torch.Tensor | None = None
    hess: torch.Tensor | None = None

    def lin_parts(self, spec: KernelSpec) -> tuple[float, float, torch.Tensor | None]:
        """``(loglik, q, grad)`` from the ``lin`` sums, ``nan``/``None`` where not computed."""
        grad = self.grad
        if grad is not None and grad.shape[1] != spec.n_features:
            grad = grad[:, : spec.n_features]
        totals = self.totals[:, 0].tolist() if self.totals is not None else []
        q = totals[0] if spec.gate else math.nan
        loglik = totals[int(spec.gate)] if spec.posterior else math.nan
        return loglik, q, grad

    def unpacked(self, spec: KernelSpec) -> torch.Tensor:
        """All ``(m, D, D)`` Grams."""
        D = spec.gram_rows
        if not self.packed:
            m = (spec.k if spec.expert_stats else 0) + len(spec.pairs)
            out = self.grams.reshape(m, D, D)
            return 0.5 * (out + out.transpose(1, 2))
        return _unpack(self.grams, D)

    def expert_stats(self, spec: KernelSpec) -> ExpertStats:
        """:class:`ExpertStats` from the first ``k`` Grams of ``[f; y]``."""
        k, d = spec.k, spec.n_features
        G = (_unpack(self.grams[:k], d + 1) if self.packed else self.unpacked(spec)[:k])
        mass = self.grams[:k, -1] if self.packed else self.mass
        return ExpertStats(mass=mass.clone(), G=G[:, :d, :d].clone(), b=G[:, :d, d].clone(),
                           yy=G[:, d, d].clone())


@functools.cache
def _unpack_index(D: int, device: torch.device) -> torch.Tensor:
    """The gather index of :func:`_unpack`, built once per ``D`` and device."""
    iu = torch.triu_indices(D, D)
    pos = torch.empty(D, D, dtype=torch.long)
    pos[iu[0], iu[1]] = torch.arange(iu.shape[1])
    pos[iu[1], iu[0]] = torch.arange(iu.shape[1])
    return pos.reshape(-1).to(device)


def _unpack(flat: torch.Tensor, D: int) -> torch.Tensor:
    """``(m, D, D)`` symmetric matrices from their packed upper triangles, ``(m, >= D(D+1)/2)``
    (row by row, as :meth:`~moebench_plugins.models.native.Pairs.packed`): one gather through a
    cached index."""
    idx = _unpack_index(D, flat.device)
    return flat.index_select(1, idx).reshape(flat.shape[0], D, D)


@functools.cache
def _hessian_index(km1: int, d: int, device: torch.device) -> torch.Tensor:
    """The gather index of :func:`_hessian_from_packed`, built once per shape and device."""
    T = d * (d + 1) // 2
    iu = torch.triu_indices(d, d)
    pos = torch.empty(d, d, dtype=torch.long)
    pos[iu[0], iu[1]] = torch.arange(T)
    pos[iu[1], iu[0]] = torch.arange(T)
    pair = torch.empty(km1, km1, dtype=torch.long)
    j = 0
    for a in range(km1):
        for b in range(a, km1):
            pair[a, b] = pair[b, a] = j
            j += 1
    # H[a d + i, b d + j] = hess[pair(a, b), pos(i, j)]
    full = pair[:, None, :, None] * T + pos[None, :, None, :]
    return full.reshape(-1).to(device)


def _hessian_from_packed(hess: torch.Tensor, km1: int, d: int) -> torch.Tensor:
    """The ``(km1 d, km1 d)`` negated Hessian from the packed pair Grams of the fused pass."""
    idx = _hessian_index(km1, d, hess.device)
    n = km1 * d
    return hess.reshape(-1).index_select(0, idx).reshape(n, n)


#: Most weighted sums (weights x products) a pass gives the native kernel: its scratch is a
#: vector register per sum and thread (16 MB per thread at 64-byte vectors), and beyond a few
#: hundred chunk rows the stacked GEMM is as fast (measured: even at 300 rows, slower at 500).
_NATIVE_MAX_SUMS = 1 << 18


def _packed_layout(spec: KernelSpec, chunks: RowChunks) -> bool:
    """Grams as packed products through the native kernel (no products are materialised) within
    its scratch budget, stacked ``w_j z`` GEMMs beyond it, and, without the native kernel,
    whichever of packed products and stacked ``w_j z`` moves fewer numbers."""
    D = spec.gram_rows
    m = (spec.k if spec.expert_stats else 0) + len(spec.pairs)
    if native_supported(chunks.device, chunks.dtype):
        return m * (D * (D + 1) // 2) <= _NATIVE_MAX_SUMS
    return D * (D + 1) // 2 <= m * D


#: Row blocks of the stacked Grams: beyond two blocks only the upper block triangle is
#: multiplied (measured at ``D = 786``, 2,668 samples: 0.55x the full GEMM's time, 1-2 threads).
_GRAM_BLOCK = 128


def _stacked_gram(weights: torch.Tensor, Zg: torch.Tensor) -> torch.Tensor:
    """``[w_j z] @ z^T`` stacked, ``(m D, D)``: the Grams of large ``D`` as GEMMs.

    Each Gram is symmetric, so for ``D > 2 * _GRAM_BLOCK`` only its upper block triangle is
    computed (row block ``I`` against rows ``I0:``) and mirrored: about half the arithmetic of the
    full product (the gate's Newton system at ``D = 786`` on Fashion-MNIST).
    """
    m, (D, c) = weights.shape[0], Zg.shape
    S = weights[:, None, :] * Zg[None, :, :]
    if D <= 2 * _GRAM_BLOCK:
        return S.reshape(-1, c) @ Zg.T
    out = S.new_empty(m, D, D)
    for i in range(0, D, _GRAM_BLOCK):
        i1 = min(D, i + _GRAM_BLOCK)
        block = S[:, i:i1] @ Zg[i:].T
        out[:, i:i1, i:] = block
        out[:, i1:, i:i1] = block[:, :, i1 - i :].transpose(1, 2)
    return out.reshape(m * D, D)


def _gate_stats(spec: KernelSpec, sums: _PassSums, d: int, like: torch.Tensor) -> GateStats:
    """:class:`GateStats` from a pass's sums."""
    km1 = spec.k - 1
    _, q, grad = sums.lin_parts(spec)
    if not spec.gate_system:
        return GateStats(q=q, grad=None, neg_hessian=None)
    if km1 == 0:
        return GateStats(q=q, grad=like.new_zeros(0, d), neg_hessian=like.new_zeros(0, 0))
    if not spec.gate_hessian:
        return GateStats(q=q, grad=grad, neg_hessian=None)
    if sums.hess is not None:
        return GateStats(q=q, grad=grad, neg_hessian=_hessian_from_packed(sums.hess, km1, d))
    grams = sums.unpacked(spec)
    row0 = spec.k if spec.expert_stats else 0
    H = like.new_zeros(km1 * d, km1 * d)
    for j, (a, b) in enumerate(spec.pairs):
        blk = grams[row0 + j, :d, :d]
        H[a * d : (a + 1) * d, b * d : (b + 1) * d] = blk
        if a != b:
            H[b * d : (b + 1) * d, a * d : (a + 1) * d] = blk
    return GateStats(q=q, grad=grad, neg_hessian=H)
