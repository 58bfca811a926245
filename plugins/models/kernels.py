"""Fused, chunked kernels of the regression MoE: E-step, M-step sufficient statistics, gate Newton.

One pass over row chunks of the data computes everything an EM iteration needs:

* the E-step: gate log-probabilities, expert log-densities, their log-sum-exp (the
  log-likelihood) and the responsibilities ``R``;
* the expert M-step statistics of linear experts: per expert ``i`` the weighted Gram
  ``G_i = sum_n r_ni f_n f_n^T``, ``b_i = sum_n r_ni y_n f_n``, ``c_i = sum_n r_ni y_n^2`` and the
  mass ``sum_n r_ni``, from which the weighted least-squares fit and its weighted residual sum
  ``c_i - 2 a^T b_i + a^T G_i a`` follow without another pass;
* the gate Newton system: ``q = sum_n sum_i r_ni log p_i(f_n)``, the gradient
  ``sum_n (r_n - s_n p_n)_a f_n`` and the negated Hessian
  ``sum_n s_n (diag(p_n) - p_n p_n^T)_{ab} f_n f_n^T`` over the free rows ``a, b < k``.

Every chunk is laid out transposed, ``[f; 1?; y]`` as a ``(d' + 1, c)`` buffer, so that the
element-wise work runs along contiguous rows of length ``c`` and all weighted Grams of a chunk
are one GEMM: with ``m`` weight rows ``w_j`` (``k`` responsibilities and ``k (k - 1) / 2`` gate
Hessian weights) either ``[w_j] @ Q^T`` with ``Q`` the ``(d' + 1)(d' + 2) / 2`` distinct products
``z_a z_b`` of the chunk (small ``d``), or ``[w_j z] @ z^T`` stacked (large ``d``), whichever
moves fewer numbers. Memory beyond the data is ``O(chunk_size (k^2 + d^2))`` for small ``d`` and
``O(chunk_size k^2 d)`` for large ``d``, never ``n x k x d``; the only per-sample outputs are the
optional ``(n, k)`` responsibilities and ``(n,)`` log-likelihoods.

The code is device-generic torch: the same kernels run on the CPU and on CUDA, in float32 and
float64, and on chunks streamed from memory-mapped files (:class:`RowChunks`).
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.lib import format as npy_format

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "chunked_nll_grad",
    "ExpertStats",
    "GateStats",
    "LabelFn",
    "PassStats",
    "RowChunks",
    "em_pass",
    "gate_pass",
    "open_npz_memmap",
    "posterior_labels",
    "solve_experts",
    "weighted_sse_pass",
]

#: Rows per chunk: ``(d' + 1) x chunk_size`` buffers stay in the L2 cache for small ``d``.
DEFAULT_CHUNK_SIZE = 16384
_LOG_2PI = math.log(2.0 * math.pi)
#: Elements of the stacked ``[w_j z]`` temporary of one GEMM (large ``d``): 16 MB in float64.
_STACKED_ELEMENTS = 1 << 21

#: ``labels(start, stop, chunk) -> (k, c)`` soft labels of the rows ``start:stop`` (transposed).
LabelFn = Callable[[int, int, torch.Tensor], torch.Tensor]


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

    Notes
    -----
    Iteration yields ``(start, stop, Z)``; ``Z`` is a view of a buffer reused by the next chunk,
    so consumers must not keep it.
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

    def _rows(self, a: torch.Tensor | np.ndarray, s: int, e: int) -> torch.Tensor:
        part = a[s:e]
        if not isinstance(part, torch.Tensor):
            part = torch.from_numpy(np.array(part))  # a writable copy of the chunk
        return part.to(self.device, self.dtype, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        d = int(self.X.shape[1])
        rows = self.n_features + 1
        buf = torch.zeros(rows, min(self.chunk_size, self.n_rows), dtype=self.dtype,
                          device=self.device)
        if self.intercept:
            buf[d].fill_(1.0)
        for s in range(0, self.n_rows, self.chunk_size):
            e = min(self.n_rows, s + self.chunk_size)
            Z = buf[:, : e - s]
            Z[:d].copy_(self._rows(self.X, s, e).T)
            if self.y is not None:
                Z[-1].copy_(self._rows(self.y, s, e))
            yield s, e, Z


@dataclass
class ExpertStats:
    """Weighted sufficient statistics of linear experts (sums over samples).

    Attributes
    ----------
    mass
        ``sum_n r_ni``, shape ``(k,)``.
    G
        ``sum_n r_ni f_n f_n^T``, shape ``(k, d', d')``.
    b
        ``sum_n r_ni y_n f_n``, shape ``(k, d')``.
    yy
        ``sum_n r_ni y_n^2``, shape ``(k,)``.
    """

    mass: torch.Tensor
    G: torch.Tensor
    b: torch.Tensor
    yy: torch.Tensor

    def sse(self, A: torch.Tensor) -> torch.Tensor:
        """Weighted residual sums ``sum_n r_ni (y_n - a_i . f_n)^2`` of rows ``A``, ``(k,)``."""
        GA = torch.einsum("kij,kj->ki", self.G, A)
        return self.yy - 2.0 * (A * self.b).sum(1) + (A * GA).sum(1)

    def sse_change(self, A_new: torch.Tensor, A_old: torch.Tensor) -> torch.Tensor:
        """``sse(A_new) - sse(A_old)`` computed without cancellation of ``yy``, shape ``(k,)``."""
        D = A_new - A_old
        S = torch.einsum("kij,kj->ki", self.G, A_new + A_old)
        return (D * (S - 2.0 * self.b)).sum(1)


@dataclass
class GateStats:
    """Soft-label softmax-regression objective and Newton system at ``W`` (sums over samples).

    Attributes
    ----------
    q
        ``sum_n sum_i r_ni log p_i(f_n)`` (terms with ``r_ni = 0`` count as 0).
    grad
        ``sum_n (r_na - s_n p_na) f_n`` for the free rows ``a < k``, shape ``(k-1, d')``;
        ``s_n = sum_i r_ni``.
    neg_hessian
        ``sum_n s_n (diag(p_n) - p_n p_n^T)_{ab} f_n f_n^T``, shape ``((k-1) d', (k-1) d')`` in
        row-major order of the free rows; ``None`` when not requested.
    """

    q: float
    grad: torch.Tensor | None
    neg_hessian: torch.Tensor | None


@dataclass
class PassStats:
    """What one :func:`em_pass` accumulated.

    Attributes
    ----------
    loglik
        ``sum_n log p(y_n | x_n)`` (``nan`` when labels were given).
    experts
        Linear-expert statistics, or ``None``.
    gate
        Gate objective and Newton system at ``W``, or ``None``.
    """

    loglik: float
    experts: ExpertStats | None
    gate: GateStats | None


class _Grams:
    """Accumulates ``sum_n w_jn z_n z_n^T`` for ``m`` weight rows with one GEMM per chunk."""

    def __init__(self, m: int, D: int, like: torch.Tensor):
        self.m, self.D = m, D
        iu = torch.triu_indices(D, D, device=like.device)
        self.iu, self.ju = iu[0], iu[1]
        nq = self.iu.numel()
        # Packed products z_a z_b (nq per row) against stacked w_j z (m D per row): fewer numbers.
        self.packed = nq <= m * D
        shape = (m, nq) if self.packed else (m * D, D)
        self.acc = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.offsets = [0]
        for a in range(D):
            self.offsets.append(self.offsets[-1] + D - a)
        self._buf: torch.Tensor | None = None

    def add(self, Wt: torch.Tensor, Z: torch.Tensor) -> None:
        c = Z.shape[1]
        if self.packed:
            rows = self.offsets[-1]
            if self._buf is None or self._buf.shape[1] < c:
                self._buf = Z.new_empty(rows, c)
            Q = self._buf[:, :c]
            for a in range(self.D):
                torch.mul(Z[a:], Z[a], out=Q[self.offsets[a] : self.offsets[a + 1]])
            self.acc.addmm_(Wt, Q.T)
        else:
            # Column blocks keep the stacked (m D, block) temporary near the cache size.
            block = max(256, _STACKED_ELEMENTS // (self.m * self.D))
            for a in range(0, c, block):
                Zb, Wb = Z[:, a : a + block], Wt[:, a : a + block]
                S = (Wb[:, None, :] * Zb[None, :, :]).reshape(self.m * self.D, Zb.shape[1])
                self.acc.addmm_(S, Zb.T)

    def result(self) -> torch.Tensor:
        """The ``(m, D, D)`` symmetric Grams."""
        if not self.packed:
            out = self.acc.reshape(self.m, self.D, self.D)
            return 0.5 * (out + out.transpose(1, 2))
        out = self.acc.new_zeros(self.m, self.D, self.D)
        out[:, self.iu, self.ju] = self.acc
        out[:, self.ju, self.iu] = self.acc
        return out


def _activate(t: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "linear":
        return t
    if activation == "sigmoid":
        return torch.sigmoid(t)
    if activation == "relu":
        return torch.relu(t)
    raise ValueError(f"unknown activation {activation!r}")


def _logsumexp0(Zt: torch.Tensor) -> torch.Tensor:
    """``log sum_i exp(Z_i)`` over the rows of ``(k, c)``; ``-inf`` columns stay ``-inf``."""
    mx = Zt.amax(dim=0)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    return (Zt - mx).exp_().sum(dim=0).log_().add_(mx)


def _gate_log_probs_t(W: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """``log softmax(W f_n)`` transposed, ``(k, c)``."""
    logits = W @ F
    return logits.sub_(_logsumexp0(logits))


class _GateAccumulator:
    """Per-chunk gate objective, gradient and Hessian weights."""

    def __init__(self, k: int, d: int, like: torch.Tensor, system: bool, grams: _Grams | None,
                 row0: int):
        self.k, self.d, self.system = k, d, system
        self.km1 = k - 1
        self.pairs = [(a, b) for a in range(self.km1) for b in range(a, self.km1)]
        self.q = like.new_zeros(())
        self.grad = like.new_zeros(self.km1, d) if system else None
        self.grams, self.row0 = grams, row0

    @property
    def n_weights(self) -> int:
        return len(self.pairs) if self.system else 0

    def add(self, lg: torch.Tensor, Rt: torch.Tensor, F: torch.Tensor, Wt: torch.Tensor | None
            ) -> None:
        self.q += torch.where(Rt > 0, Rt * lg, torch.zeros_like(lg)).sum()
        if not self.system or self.km1 == 0:
            return
        P = lg[: self.km1].exp()
        s = Rt.sum(dim=0)
        Ps = P * s
        self.grad.addmm_(Rt[: self.km1] - Ps, F.T)
        for j, (a, b) in enumerate(self.pairs):
            out = Wt[self.row0 + j]
            if a == b:
                torch.mul(Ps[a], 1.0 - P[a], out=out)
            else:
                torch.mul(Ps[a], P[b], out=out).neg_()

    def result(self, gram: torch.Tensor | None) -> GateStats:
        H = None
        if self.system:
            d, km1 = self.d, self.km1
            H = self.q.new_zeros(km1 * d, km1 * d)
            for j, (a, b) in enumerate(self.pairs):
                block = gram[self.row0 + j, :d, :d]
                H[a * d : (a + 1) * d, b * d : (b + 1) * d] = block
                if a != b:
                    H[b * d : (b + 1) * d, a * d : (a + 1) * d] = block
        return GateStats(q=float(self.q), grad=self.grad, neg_hessian=H)


def em_pass(
    chunks: RowChunks,
    A: torch.Tensor,
    W: torch.Tensor,
    log_sigma: torch.Tensor,
    *,
    activation: str = "linear",
    labels: torch.Tensor | LabelFn | None = None,
    R_out: torch.Tensor | None = None,
    loglik_out: torch.Tensor | None = None,
    expert_stats: bool = False,
    gate: bool = False,
    gate_system: bool = True,
) -> PassStats:
    """One pass: E-step and, optionally, the M-step statistics of experts and gate.

    Parameters
    ----------
    chunks
        The data (features with the intercept row if any, and targets).
    A, W, log_sigma
        Expert rows ``(k, d')``, gate rows ``(k, d')`` and log noise stds ``(k,)``.
    activation
        Expert non-linearity (``expert_stats`` needs ``"linear"``).
    labels
        The responsibilities to accumulate statistics with: ``None`` for the posterior at
        ``(A, W, log_sigma)`` computed in this pass (the fused EM iteration), an ``(n, k)``
        tensor, or a :data:`LabelFn`.
    R_out, loglik_out
        If given, receive the posterior ``(n, k)`` and per-sample log-likelihoods ``(n,)``
        (only with ``labels=None``).
    expert_stats
        Accumulate :class:`ExpertStats` (linear experts).
    gate, gate_system
        Accumulate the gate objective at ``W`` and, with ``gate_system``, its Newton system.

    Returns
    -------
    PassStats
        Sums over the ``n`` samples.
    """
    k, d = A.shape
    if expert_stats and activation != "linear":
        raise ValueError("expert sufficient statistics exist for linear experts only")
    if labels is not None and (R_out is not None or loglik_out is not None):
        raise ValueError("R_out and loglik_out need labels=None (the posterior of this pass)")
    dev, dt = chunks.device, chunks.dtype
    A, W = A.to(dev, dt), W.to(dev, dt)
    log_sigma = log_sigma.to(dev, dt)
    AW = torch.cat([A, W], dim=0)
    const = (-0.5 * _LOG_2PI - log_sigma)[:, None]
    inv_sigma = torch.exp(-log_sigma)[:, None]
    like = AW
    ga = _GateAccumulator(k, d, like, gate_system, None, k if expert_stats else 0) if gate else None
    m = (k if expert_stats else 0) + (ga.n_weights if ga else 0)
    grams = _Grams(m, d + 1, like) if m else None
    loglik = like.new_zeros(())
    mass = like.new_zeros(k)
    wbuf = None
    for s, e, Z in chunks:
        F, yc = Z[:d], Z[d]
        L = AW @ F
        lg = L[k:]
        lg.sub_(_logsumexp0(lg))
        if labels is None:
            mu = _activate(L[:k], activation)
            z = (yc - mu).mul_(inv_sigma)
            joint = z.mul_(z).mul_(-0.5).add_(const).add_(lg)
            ll = _logsumexp0(joint)
            loglik += ll.sum()
            Rt = joint.sub_(ll).exp_()
            if R_out is not None:
                R_out[s:e].copy_(Rt.T)
            if loglik_out is not None:
                loglik_out[s:e].copy_(ll)
        elif callable(labels):
            Rt = labels(s, e, Z)
        else:
            Rt = labels[s:e].T.to(dt)
        Wt = None
        if grams is not None:
            if wbuf is None or wbuf.shape[1] < e - s:
                wbuf = Z.new_empty(m, Z.shape[1])
            Wt = wbuf[:, : e - s]
            if expert_stats:
                Wt[:k].copy_(Rt)
                mass += Rt.sum(dim=1)
        if ga is not None:
            ga.add(lg, Rt, F, Wt)
        if grams is not None:
            grams.add(Wt, Z)
    gram = grams.result() if grams is not None else None
    experts = None
    if expert_stats:
        G = gram[:k]
        experts = ExpertStats(
            mass=mass, G=G[:, :d, :d].clone(), b=G[:, :d, d].clone(), yy=G[:, d, d].clone()
        )
    gate_stats = ga.result(gram) if ga is not None else None
    ll_value = float(loglik) if labels is None else math.nan
    return PassStats(loglik=ll_value, experts=experts, gate=gate_stats)


def gate_pass(
    chunks: RowChunks, labels: torch.Tensor | LabelFn, W: torch.Tensor, *, system: bool
) -> GateStats:
    """Gate objective ``q`` at ``W`` and, with ``system``, its gradient and negated Hessian.

    Parameters
    ----------
    chunks
        The gate inputs (targets unused).
    labels
        Soft labels ``(n, k)`` or a :data:`LabelFn`.
    W
        Gate rows ``(k, d')`` (last row zero).
    system
        Also accumulate the Newton system (one weighted-Gram GEMM per chunk).

    Returns
    -------
    GateStats
        Sums over samples.
    """
    k, d = W.shape
    dt = chunks.dtype
    W = W.to(chunks.device, dt)
    ga = _GateAccumulator(k, d, W, system, None, 0)
    grams = _Grams(ga.n_weights, d, W) if ga.n_weights else None
    wbuf = None
    for s, e, Z in chunks:
        F = Z[:d]
        lg = _gate_log_probs_t(W, F)
        Rt = labels(s, e, Z) if callable(labels) else labels[s:e].T.to(dt)
        Wt = None
        if grams is not None:
            if wbuf is None or wbuf.shape[1] < e - s:
                wbuf = Z.new_empty(grams.m, Z.shape[1])
            Wt = wbuf[:, : e - s]
        ga.add(lg, Rt, F, Wt)
        if grams is not None:
            grams.add(Wt, F)
    return ga.result(grams.result() if grams is not None else None)


def posterior_labels(
    A: torch.Tensor, W: torch.Tensor, log_sigma: torch.Tensor, activation: str = "linear"
) -> LabelFn:
    """A :data:`LabelFn` recomputing the posterior at fixed parameters chunk by chunk.

    Used when the ``(n, k)`` responsibilities are not kept (streaming from disk): each gate pass
    recomputes them from the parameters of the E-step.
    """
    k = A.shape[0]
    AW = torch.cat([A, W], dim=0)
    const = (-0.5 * _LOG_2PI - log_sigma)[:, None]
    inv_sigma = torch.exp(-log_sigma)[:, None]

    def labels(start: int, stop: int, Z: torch.Tensor) -> torch.Tensor:
        d = AW.shape[1]
        L = AW.to(Z.dtype) @ Z[:d]
        lg = L[k:]
        lg.sub_(_logsumexp0(lg))
        z = (Z[d] - _activate(L[:k], activation)).mul_(inv_sigma.to(Z.dtype))
        joint = z.mul_(z).mul_(-0.5).add_(const.to(Z.dtype)).add_(lg)
        return joint.sub_(_logsumexp0(joint)).exp_()

    return labels


def solve_experts(stats: ExpertStats, A_old: torch.Tensor, n: int) -> torch.Tensor:
    """Weighted least squares per expert from :class:`ExpertStats`, safeguarded.

    ``a_i = (G_i + lam I)^{-1} b_i`` with ``lam = 1e-10 mean(diag G_i)``; an expert with no mass
    (``<= 1e-12 n``), a non-finite solution or a larger weighted residual sum keeps ``a_i``.

    Parameters
    ----------
    stats
        Statistics of the pass.
    A_old
        Current rows ``(k, d')``.
    n
        Number of samples.

    Returns
    -------
    torch.Tensor
        New rows ``(k, d')``.
    """
    k, d = A_old.shape
    G = stats.G
    lam = 1e-10 * (G.diagonal(dim1=1, dim2=2).mean(dim=1) + 1e-300)
    eye = torch.eye(d, dtype=G.dtype, device=G.device)
    M = G + lam[:, None, None] * eye
    L, info = torch.linalg.cholesky_ex(M)
    cand = torch.cholesky_solve(stats.b[:, :, None], L)[:, :, 0]
    bad = info != 0
    if bool(bad.any()):
        lst = torch.linalg.lstsq(M, stats.b[:, :, None]).solution[:, :, 0]
        cand = torch.where(bad[:, None], lst, cand)
    ok = (stats.mass > 1e-12 * n) & torch.isfinite(cand).all(dim=1)
    ok &= stats.sse_change(torch.where(torch.isfinite(cand), cand, A_old), A_old) <= 0
    return torch.where(ok[:, None], cand, A_old)


def weighted_sse_pass(
    chunks: RowChunks, A: torch.Tensor, labels: torch.Tensor | LabelFn
) -> torch.Tensor:
    """Weighted residual sums ``sum_n r_ni (y_n - a_i . f_n)^2`` of linear experts, ``(k,)``.

    The exact (one more pass) counterpart of :meth:`ExpertStats.sse`, for when the residuals are
    so small against ``y`` that ``yy - 2 a.b + a'Ga`` cancels.
    """
    k, d = A.shape
    A = A.to(chunks.device, chunks.dtype)
    out = A.new_zeros(k)
    for s, e, Z in chunks:
        res = (Z[d] - A @ Z[:d]).square_()
        Rt = labels(s, e, Z) if callable(labels) else labels[s:e].T.to(chunks.dtype)
        out += (Rt * res).sum(dim=1)
    return out


def chunked_nll_grad(
    model: Any,
    params: dict[str, torch.Tensor],
    X: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[float, dict[str, torch.Tensor]]:
    """Mean NLL and its gradient, accumulated chunk by chunk (full-batch GD on streamed data).

    Parameters
    ----------
    model
        A :class:`moebench.Model` (its differentiable ``log_likelihood`` is used per chunk).
    params
        Parameters (not modified).
    X, y
        Inputs and targets: tensors or (memory-mapped) numpy arrays.
    chunk_size
        Rows per chunk; memory is that of one chunk's autograd graph.

    Returns
    -------
    tuple
        ``(nll, grads)`` with ``grads[name]`` the gradient of the mean NLL.
    """
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    n = int(X.shape[0])
    total = 0.0
    with torch.enable_grad():
        for s in range(0, n, chunk_size):
            Xc, yc = X[s : s + chunk_size], y[s : s + chunk_size]
            if not isinstance(Xc, torch.Tensor):
                Xc = torch.from_numpy(np.array(Xc))
                yc = torch.from_numpy(np.array(yc))
            Xc = Xc.to(model.device, model.dtype)
            yc = yc.to(model.device, model.dtype)
            part = -model.log_likelihood(leaves, Xc, yc).sum() / n
            part.backward()
            total += float(part.detach())
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in leaves.items()}
    return total, grads


def open_npz_memmap(path: str | os.PathLike[str]) -> dict[str, np.memmap]:
    """Memory-map every array of an uncompressed ``.npz`` file (``np.savez``), read-only.

    ``np.load(path, mmap_mode="r")`` loads the members of an NPZ into memory; an uncompressed
    member is a plain ``.npy`` stored at a fixed offset of the zip file, so it can be mapped
    directly and streamed through :class:`RowChunks` without reading it all.

    Parameters
    ----------
    path
        The ``.npz`` file.

    Returns
    -------
    dict
        ``np.memmap`` arrays by member name (without ``.npy``).

    Raises
    ------
    ValueError
        A member is compressed (``np.savez_compressed``) and cannot be mapped.
    """
    out: dict[str, np.memmap] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"{os.fspath(path)!r}: member {info.filename!r} is compressed; save with "
                    "np.savez (not savez_compressed) to stream it"
                )
            fh.seek(info.header_offset)
            local = fh.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=fh.tell(), shape=shape,
                                  order="F" if fortran else "C")
    return out
