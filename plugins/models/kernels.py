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
element-wise work runs along contiguous rows of length ``c``. A pass calls, per chunk, one
element-wise kernel (:class:`KernelSpec`, :func:`chunk_kernel`; the sums over the ``k`` experts
unrolled over rows of samples) that returns the rows to be summed, the responsibilities, the gate
Hessian weights and the gate gradient and objective rows, and then one call of
:func:`~moebench_plugins.models.native.weighted_sums` that reduces them all against the chunk:
the weighted Grams over the ``(d' + 1)(d' + 2) / 2`` distinct products ``z_a z_b`` (generated
in registers by the native kernel on the CPU; materialised by its torch expression elsewhere),
or, without the native kernel or beyond its scratch budget (``d`` in the hundreds), ``[w_j z] @
z^T`` stacked if that moves fewer numbers. Memory beyond the data is ``O(chunk_size (k^2 + d))``
with the native kernel and at most ``O(chunk_size k^2 d)`` otherwise (the torch expression goes
through a chunk in column blocks), never ``n x k x d``; the only per-sample outputs are the
optional ``(n, k)`` responsibilities (kept as the blocks the pass computed,
:class:`ChunkedLabels`) and ``(n,)`` log-likelihoods.

The element-wise kernels are device-generic torch: the same code runs on the CPU and on CUDA,
in float32 and float64, and on chunks streamed from memory-mapped files (:class:`RowChunks`);
``torch.compile`` (``MOEBENCH_COMPILE``, see :func:`compile_mode`) turns each into a single
vectorised loop, eager execution runs the same arithmetic op by op.
"""

from __future__ import annotations

import bisect
import functools
import math
import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .native import FusedPass, Pairs, fused_supported, native_supported, weighted_sums

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "chunked_nll_grad",
    "ChunkedLabels",
    "ExpertStats",
    "activate",
    "COMPILE_MIN_ROWS",
    "GateStats",
    "KernelSpec",
    "LabelFn",
    "PassStats",
    "RowChunks",
    "TRANSPOSED_CACHE_MAX_BYTES",
    "cached_row_chunks",
    "chunk_kernel",
    "compile_mode",
    "em_pass",
    "gate_pass",
    "posterior_labels",
    "solve_experts",
    "weighted_sse_pass",
]

#: Rows per chunk: large enough that the fixed cost of a (compiled) kernel call, about 0.1 ms, is
#: small against the chunk's work, small enough that a chunk's rows of small ``d`` stay in the
#: last-level cache.
DEFAULT_CHUNK_SIZE = 65536
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
_TRANSPOSED: dict[tuple[int, int], tuple[Any, Any, tuple, RowChunks]] = {}


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
    slot = (id(X), id(y))
    state = (X._version, None if y is None else y._version, chunk_size, intercept)
    hit = _TRANSPOSED.get(slot)
    if (hit is not None and hit[0]() is X and (y is None or hit[1]() is y)
            and hit[2] == state):
        return hit[3]
    chunks = RowChunks(X, y, chunk_size=chunk_size, intercept=intercept, transposed_copy=True)
    x_ref = weakref.ref(X, lambda _ref, slot=slot: _TRANSPOSED.pop(slot, None))
    y_ref = weakref.ref(y) if y is not None else None
    _TRANSPOSED[slot] = (x_ref, y_ref, state, chunks)
    return chunks


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
        GA = torch.matmul(self.G, A.unsqueeze(2)).squeeze(2)
        return self.yy - 2.0 * (A * self.b).sum(1) + (A * GA).sum(1)

    def sse_change(self, A_new: torch.Tensor, A_old: torch.Tensor) -> torch.Tensor:
        """``sse(A_new) - sse(A_old)`` computed without cancellation of ``yy``, shape ``(k,)``."""
        S = torch.matmul(self.G, (A_new + A_old).unsqueeze(2)).squeeze(2)
        return ((A_new - A_old) * (S - 2.0 * self.b)).sum(1)


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


@dataclass(frozen=True)
class KernelSpec:
    """What one chunk kernel computes; each spec is one (eager or compiled) kernel variant.

    Attributes
    ----------
    k
        Number of experts.
    n_features
        Rows of ``F`` in a chunk (features and the intercept row, if any).
    activation
        Expert non-linearity (``"linear"``, ``"sigmoid"`` or ``"relu"``).
    posterior
        Compute the E-step at the parameters (else the responsibilities are given).
    per_sample
        Return the per-sample log-likelihoods and responsibilities of the E-step.
    expert_stats
        Accumulate the linear-expert statistics (mass and weighted Grams of ``[f; y]``).
    gate
        Accumulate the gate objective ``q``.
    gate_system
        Also the gate gradient and, with ``gate_hessian``, the Hessian weights (weighted Grams
        of ``f``).
    gate_hessian
        With ``gate_system``: the Hessian too (else the gradient alone).
    """

    k: int
    n_features: int
    activation: str = "linear"
    posterior: bool = True
    per_sample: bool = False
    expert_stats: bool = False
    gate: bool = False
    gate_system: bool = False
    gate_hessian: bool = True

    @functools.cached_property
    def pairs(self) -> list[tuple[int, int]]:
        """Free gate-row pairs ``a <= b < k - 1`` of the Hessian blocks."""
        if not (self.gate_system and self.gate_hessian):
            return []
        km1 = self.k - 1
        return [(a, b) for a in range(km1) for b in range(a, km1)]

    @property
    def gram_rows(self) -> int:
        """Rows ``D`` of the chunk entering the expert Grams (``[f; y]``)."""
        return self.n_features + 1 if self.expert_stats else self.n_features


@functools.lru_cache(maxsize=256)
def _kernel_spec(*args: Any) -> KernelSpec:
    """The :class:`KernelSpec` of these fields, built once (a pass per Newton step asks again)."""
    return KernelSpec(*args)


def _max_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """Element-wise maximum over a list of rows; non-finite maxima become 0 (log-sum-exp shift)."""
    mx = rows[0]
    for r in rows[1:]:
        mx = torch.maximum(mx, r)
    return torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))


def _sum_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    out = rows[0]
    for r in rows[1:]:
        out = out + r
    return out


def _make_kernel(spec: KernelSpec, fused_dots: bool = False) -> Callable[..., tuple]:
    """The chunk kernel of ``spec``: plain torch, element-wise over rows of length ``c``.

    The sums over the ``k`` experts are unrolled into element-wise operations on rows and the
    kernel has no reductions over samples: it returns the rows whose sums (weighted Grams, plain
    sums) a pass needs, and :func:`_run_pass` reduces them with
    :func:`~moebench_plugins.models.native.weighted_sums`. ``torch.compile`` thereby turns the
    whole E-step and every weight of a chunk into one vectorised loop over samples; eagerly it is
    the same arithmetic op by op. ``fused_dots`` writes the logits ``AW f`` as sums over the
    features (fused into that loop) instead of a matrix product.

    The kernel maps ``(Z, AW, const, inv_sigma, labels)`` with ``Z`` the ``(d' + 1, c)`` chunk
    ``[f; y]``, ``AW`` the expert rows followed by the gate rows (``[A; W]``, just ``W`` without
    the posterior), ``const = -log(2 pi) / 2 - log sigma``, ``inv_sigma = 1 / sigma`` and
    ``labels`` the given ``(k, c)`` responsibilities (unused with the posterior) to
    ``(R, hw, lin)``:

    * ``R``, ``(k, c)``: the posterior responsibilities (with ``per_sample`` or
      ``expert_stats``);
    * ``hw``, ``(len(pairs), c)``: the gate Hessian weights ``s p_a (delta_ab - p_b)`` of
      :attr:`KernelSpec.pairs` (with the Newton system);
    * ``lin``, ``(l, c)``: the gate gradient rows ``r_a - s p_a`` (with the Newton system; summed
      against ``f``), then the rows that are only summed: the gate objective row
      ``sum_i r_i log p_i`` (with ``gate``) and the per-sample log-likelihood (with the
      posterior).

    The expert statistics are the Grams of ``[f; y; 1]`` weighted by the responsibilities.
    Entries a spec does not ask for are ``None``.
    """
    k, nf = spec.k, spec.n_features
    km1 = k - 1
    pairs = spec.pairs
    need_logits = spec.posterior or spec.gate
    gate_offset = k if spec.posterior else 0
    activation = spec.activation

    def kernel(Z, AW, const, inv_sigma, labels):
        F = Z[:nf]
        lin: list[torch.Tensor] = []
        if need_logits:
            if fused_dots:
                L = [_sum_rows([AW[i, a] * F[a] for a in range(nf)]) for i in range(AW.shape[0])]
            else:
                L = AW @ F
            g = [L[gate_offset + i] for i in range(k)]
            mx = _max_rows(g)
            eg = [torch.exp(v - mx) for v in g]
            sg = _sum_rows(eg)
            lse = mx + torch.log(sg)
            lg = [v - lse for v in g]  # log softmax(W f)
        ll = None
        if spec.posterior:
            y = Z[nf]
            u = []
            for i in range(k):
                z = (y - activate(L[i], activation)) * inv_sigma[i]
                u.append(lg[i] + const[i] - 0.5 * z * z)  # log pi_i + log N(y; mu_i, sigma_i^2)
            mu = _max_rows(u)
            eu = [torch.exp(v - mu) for v in u]
            su = _sum_rows(eu)
            ll = mu + torch.log(su)
            inv_su = 1.0 / su
            R = [v * inv_su for v in eu]
        else:
            R = [labels[i] for i in range(k)]
        hw: list[torch.Tensor] = []
        if spec.gate:
            if spec.gate_system and km1 > 0:
                s = _sum_rows(R)
                inv_sg = 1.0 / sg
                P = [v * inv_sg for v in eg[:km1]]
                Ps = [s * p for p in P]
                lin += [R[a] - Ps[a] for a in range(km1)]
                hw = [Ps[a] * (1.0 - P[a]) if a == b else -(Ps[a] * P[b]) for a, b in pairs]
            lin.append(_sum_rows([torch.where(R[i] > 0, R[i] * lg[i], 0.0) for i in range(k)]))
        if ll is not None:
            lin.append(ll)
        Rt = torch.stack(R) if spec.posterior and (spec.per_sample or spec.expert_stats) else None
        return Rt, (torch.stack(hw) if hw else None), (torch.stack(lin) if lin else None)

    return kernel


def _make_stacked_kernel(spec: KernelSpec) -> Callable[..., tuple]:
    """The eager chunk kernel of ``spec``: :func:`_make_kernel`'s arithmetic on ``(k, c)`` blocks.

    Eagerly every torch call costs microseconds of dispatch whatever its size; at suite sizes
    (``c`` of a few thousand samples) the row-by-row form of :func:`_make_kernel`, written for
    ``torch.compile`` to fuse, spends most of its time there. This form computes the same
    quantities with one call per block (``k`` rows at a time): the log-sum-exp over the experts
    (max shift, then ``log sum exp``), the responsibilities, the gate Hessian weights of every
    pair at once, and returns the same ``(R, hw, lin)``. Results agree with the row form to
    rounding (tests/test_kernels.py).
    """
    k, nf = spec.k, spec.n_features
    km1 = k - 1
    pairs = spec.pairs
    need_logits = spec.posterior or spec.gate
    gate_offset = k if spec.posterior else 0
    activation = spec.activation
    index: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def pair_index(like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = (like.device, like.dtype)
        if key not in index:
            ia = torch.tensor([a for a, _ in pairs], dtype=torch.long, device=like.device)
            ib = torch.tensor([b for _, b in pairs], dtype=torch.long, device=like.device)
            delta = torch.tensor([[1.0 if a == b else 0.0] for a, b in pairs], dtype=like.dtype,
                                 device=like.device)
            index[key] = (ia, ib, delta)
        return index[key]

    def finite_max(block: torch.Tensor) -> torch.Tensor:
        mx = block.amax(dim=0)
        return torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))

    def kernel(Z, AW, const, inv_sigma, labels):
        F = Z[:nf]
        lin: list[torch.Tensor] = []
        if need_logits:
            L = AW @ F
            G = L[gate_offset : gate_offset + k]
            mx = finite_max(G)
            eg = torch.exp(G - mx)
            sg = eg.sum(dim=0)
            lg = G - (mx + torch.log(sg))  # log softmax(W f)
        ll = None
        if spec.posterior:
            z = (Z[nf] - activate(L[:k], activation)) * inv_sigma[:, None]
            u = lg + const[:, None] - 0.5 * z * z  # log pi_i + log N(y; mu_i, sigma_i^2)
            mu = finite_max(u)
            eu = torch.exp(u - mu)
            su = eu.sum(dim=0)
            ll = mu + torch.log(su)
            R = eu * (1.0 / su)
        else:
            R = labels
        hw = None
        if spec.gate:
            if spec.gate_system and km1 > 0:
                s = R.sum(dim=0)
                P = eg[:km1] * (1.0 / sg)
                Ps = s * P
                lin.append(R[:km1] - Ps)
                if pairs:
                    ia, ib, delta = pair_index(P)
                    hw = Ps[ia] * (delta - P[ib])
            lin.append(torch.where(R > 0, R * lg, 0.0).sum(dim=0, keepdim=True))
        if ll is not None:
            lin.append(ll[None])
        Rt = R if spec.posterior and (spec.per_sample or spec.expert_stats) else None
        out = (torch.cat(lin) if len(lin) > 1 else lin[0]) if lin else None
        return Rt, hw, out

    return kernel


#: ``MOEBENCH_COMPILE=auto`` compiles the torch chunk kernels of passes over at least this many
#: rows (where the fused native pass does not apply: non-linear experts, float32, more than 16
#: experts, other devices). Measured (``python -m benchmarks.compile_pays`` with
#: ``MOEBENCH_NATIVE=never``, joint EM, k = 4, d = 10, 2-core CPU): a warm-cache compile costs
#: ~4.8 s and saves 21 ms per iteration at n = 10^5 (break-even after 232 iterations), 105 ms at
#: n = 10^6 (46 iterations); a line through both pays within 100 iterations from ~394,000
#: rows. Where the fused native pass applies, compiled kernels are slower than it (12.2 vs
#: 10.6 ms at 10^5, 108 vs 84 ms at 10^6) and ``auto`` never compiles.
COMPILE_MIN_ROWS = 400_000
_KERNELS: dict[KernelSpec, Callable[..., tuple]] = {}
_COMPILED: dict[KernelSpec, Callable[..., tuple]] = {}
_compile_error: list[str] = []
#: Compiled kernels write the logits and gate gradient as sums over at most this many features.
_FUSED_DOTS_MAX = 32


def compile_mode() -> str:
    """``"auto"``, ``"always"`` or ``"never"``, from the ``MOEBENCH_COMPILE`` variable.

    ``auto`` (the default) compiles a kernel with ``torch.compile`` for passes over at least
    :data:`COMPILE_MIN_ROWS` rows, where its one-off cost (seconds, cached on disk across
    processes) is repaid within 100 iterations (measured, see there); ``always`` and ``never``
    force the choice.
    ``1``/``true`` and ``0``/``false`` are accepted too.
    """
    raw = os.environ.get("MOEBENCH_COMPILE")
    if raw is None:
        return "auto"
    raw = raw.strip().lower()
    mode = {"1": "always", "true": "always", "0": "never", "false": "never", "": "auto"}.get(
        raw, raw)
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"MOEBENCH_COMPILE={raw!r}: use auto, always or never")
    return mode


def chunk_kernel(spec: KernelSpec, n_rows: int) -> Callable[..., tuple]:
    """The kernel of ``spec`` for a pass over ``n_rows`` rows, compiled or eager.

    Compilation follows :func:`compile_mode`. If ``torch.compile`` fails (no C++ compiler for
    the CPU backend, no Triton for CUDA), a warning names the reason once and the eager kernel,
    the same arithmetic, is used from then on.
    """
    eager = _KERNELS.get(spec)
    if eager is None:
        eager = _KERNELS[spec] = _make_stacked_kernel(spec)
    mode = compile_mode()
    if _compile_error or mode == "never" or (mode == "auto" and n_rows < COMPILE_MIN_ROWS):
        return eager
    compiled = _COMPILED.get(spec)
    if compiled is None:
        # One cache entry per spec on the shared kernel code: allow a few dozen variants.
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, 64)
        fast = torch.compile(_make_kernel(spec, fused_dots=spec.n_features <= _FUSED_DOTS_MAX),
                             dynamic=True)
        first = [True]

        def compiled(*args: Any) -> tuple:
            if not first[0]:
                return fast(*args)
            try:
                out = fast(*args)
            except Exception as exc:  # the backend is missing, not the arithmetic
                _compile_error.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
                warnings.warn(
                    f"torch.compile failed ({_compile_error[0]}); moebench runs its kernels "
                    "eagerly (set MOEBENCH_COMPILE=never to skip the attempt)",
                    RuntimeWarning, stacklevel=3,
                )
                return eager(*args)
            first[0] = False
            return out

        _COMPILED[spec] = compiled
    return compiled


def activate(t: torch.Tensor, activation: str) -> torch.Tensor:
    """The expert non-linearity ``g`` applied elementwise."""
    if activation == "linear":
        return t
    if activation == "sigmoid":
        return torch.sigmoid(t)
    if activation == "relu":
        return torch.relu(t)
    raise ValueError(f"unknown activation {activation!r}")


@dataclass
class _PassSums:
    """Sums over samples of a kernel's rows (see :func:`_make_kernel`).

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


_UNPACK: dict[tuple[int, torch.device], torch.Tensor] = {}


def _unpack(flat: torch.Tensor, D: int) -> torch.Tensor:
    """``(m, D, D)`` symmetric matrices from their packed upper triangles, ``(m, >= D(D+1)/2)``
    (row by row, as :meth:`Pairs.packed`): one gather through a cached index."""
    key = (D, flat.device)
    idx = _UNPACK.get(key)
    if idx is None:
        iu = torch.triu_indices(D, D)
        pos = torch.empty(D, D, dtype=torch.long)
        pos[iu[0], iu[1]] = torch.arange(iu.shape[1])
        pos[iu[1], iu[0]] = torch.arange(iu.shape[1])
        idx = _UNPACK[key] = pos.reshape(-1).to(flat.device)
    return flat.index_select(1, idx).reshape(flat.shape[0], D, D)


_HESS_INDEX: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _hessian_from_packed(hess: torch.Tensor, km1: int, d: int) -> torch.Tensor:
    """The ``(km1 d, km1 d)`` negated Hessian from the packed pair Grams of the fused pass."""
    key = (km1, d, hess.device)
    idx = _HESS_INDEX.get(key)
    if idx is None:
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
        idx = _HESS_INDEX[key] = full.reshape(-1).to(hess.device)
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


#: Whether passes use the fused native kernel where it applies (the tests switch it off to compare).
FUSED = True
_FUSED_PASSES: dict[KernelSpec, FusedPass] = {}


def _fused_applies(spec: KernelSpec, chunks: RowChunks) -> bool:
    """Whether :class:`~moebench_plugins.models.native.FusedPass` runs ``spec``'s pass: CPU
    float64 chunks, at most 16 experts, linear experts for the posterior, the packed Grams
    within the native kernel's scratch budget, and ``MOEBENCH_COMPILE`` not ``always`` (which
    asks for the compiled torch kernels)."""
    if not (FUSED and fused_supported(chunks.device, chunks.dtype, spec.k)
            and (spec.activation == "linear" or not spec.posterior)
            and compile_mode() != "always"):
        return False
    D = spec.gram_rows
    m = (spec.k if spec.expert_stats else 0) + len(spec.pairs)
    return m * (D * (D + 1) // 2) <= _NATIVE_MAX_SUMS  # as _packed_layout with the native kernel


def _run_fused_pass(
    chunks: RowChunks,
    spec: KernelSpec,
    AW: torch.Tensor,
    const: torch.Tensor,
    inv_sigma: torch.Tensor,
    labels: torch.Tensor | LabelFn | None,
    R_out: torch.Tensor | ChunkedLabels | None,
    loglik_out: torch.Tensor | None,
) -> _PassSums:
    """:func:`_run_pass` through the fused native kernel: one call per chunk."""
    k = spec.k
    fused = _FUSED_PASSES.get(spec)
    if fused is None:
        fused = _FUSED_PASSES[spec] = FusedPass(
            k, spec.n_features, posterior=spec.posterior, expert_stats=spec.expert_stats,
            gate=spec.gate, system=spec.gate_system, hessian=spec.gate_hessian)
    flat = fused.new_sums(AW)
    for s, e, Z in chunks:
        Rin = None
        if labels is not None:
            Rin = labels(s, e, Z) if callable(labels) else labels[s:e].T
            if Rin.dtype != chunks.dtype:
                Rin = Rin.to(chunks.dtype)
            if Rin.stride(1) != 1:
                Rin = Rin.contiguous()
        Rt = None
        if isinstance(R_out, ChunkedLabels):
            Rt = AW.new_empty(k, e - s)
        elif R_out is not None:
            Rt = R_out[s:e].T
            if Rt.stride(1) != 1:
                Rt = AW.new_empty(k, e - s)
        ll = None
        if loglik_out is not None:
            ll = loglik_out[s:e]
            if ll.stride(0) != 1:
                ll = AW.new_empty(e - s)
        Zc = Z if Z.stride(1) == 1 else Z.contiguous()
        fused(Zc, AW, const, inv_sigma, Rin, flat, R_out=Rt, loglik_out=ll)
        if isinstance(R_out, ChunkedLabels):
            R_out.put(s, Rt)
        elif R_out is not None and Rt.data_ptr() != R_out[s:e].data_ptr():
            R_out[s:e].copy_(Rt.T)
        if ll is not None and ll.data_ptr() != loglik_out[s:e].data_ptr():
            loglik_out[s:e].copy_(ll)
    views = fused.views(flat)
    return _PassSums(packed=True, grad=views.get("grad"), totals=views.get("totals"),
                     grams=views.get("experts"), hess=views.get("hessian"))


def _run_pass(
    chunks: RowChunks,
    spec: KernelSpec,
    AW: torch.Tensor,
    const: torch.Tensor,
    inv_sigma: torch.Tensor,
    labels: torch.Tensor | LabelFn | None,
    R_out: torch.Tensor | ChunkedLabels | None = None,
    loglik_out: torch.Tensor | None = None,
) -> _PassSums:
    """Run ``spec``'s kernel over every chunk and sum its rows with :func:`weighted_sums`.

    In the stacked Gram layout (large ``d``) a chunk is cut into column blocks so that the
    ``(m D, block)`` temporaries stay near :data:`_STACKED_ELEMENTS`.
    """
    if _fused_applies(spec, chunks):
        return _run_fused_pass(chunks, spec, AW, const, inv_sigma, labels, R_out, loglik_out)
    dt = chunks.dtype
    D, nf, k = spec.gram_rows, spec.n_features, spec.k
    packed = _packed_layout(spec, chunks)
    gram_pairs, grad_pairs, total_pairs = (Pairs.packed(D, ones=True), Pairs.linear(nf, D),
                                           Pairs((D,), (D,)))
    n_grad = k - 1 if spec.gate_system else 0
    kernel = chunk_kernel(spec, chunks.n_rows)
    m = (k if spec.expert_stats else 0) + len(spec.pairs)
    block = None
    if m and not packed:
        block = max(256, _STACKED_ELEMENTS // (m * D))
    elif m and not native_supported(chunks.device, dt):
        block = max(256, _STACKED_ELEMENTS // len(gram_pairs))  # the products are materialised
    out = _PassSums(packed=packed)
    with torch.no_grad():
        for s, e, Z in chunks:
            if labels is None or not callable(labels):
                Rin = None if labels is None else labels[s:e].T.to(dt)
            else:
                Rin = labels(s, e, Z)
            step = block or (e - s)
            for a in range(0, e - s, step):
                b = min(e - s, a + step)
                Zb = Z[:, a:b] if (a, b) != (0, e - s) else Z
                Rb = None if Rin is None else Rin[:, a:b]
                Rt, hw, lin = kernel(Zb, AW, const, inv_sigma, Rb)
                if isinstance(R_out, ChunkedLabels):
                    R_out.put(s + a, Rt)
                elif R_out is not None:
                    R_out[s + a : s + b].copy_(Rt.T)
                if loglik_out is not None:
                    loglik_out[s + a : s + b].copy_(lin[-1])
                weights = ([Rt if spec.posterior else Rb] if spec.expert_stats else [])
                weights += [hw] if hw is not None else []
                terms, slots = [], []
                if n_grad:
                    terms.append((lin[:n_grad], grad_pairs))
                    slots.append("grad")
                if lin is not None and lin.shape[0] > n_grad:
                    terms.append((lin[n_grad:], total_pairs))
                    slots.append("totals")
                if weights and packed:
                    terms.append((weights, gram_pairs))
                    slots.append("grams")
                if terms:
                    sums = weighted_sums(Zb[:D], terms, out=[getattr(out, n) for n in slots])
                    for name, value in zip(slots, sums, strict=True):
                        setattr(out, name, value)
                if weights and not packed:
                    G = _stacked_gram(torch.cat(weights), Zb[:D])
                    out.grams = G if out.grams is None else out.grams.add_(G)
                    if spec.expert_stats:
                        mass = weights[0].sum(dim=1)
                        out.mass = mass if out.mass is None else out.mass.add_(mass)
    return out


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


def _pass_inputs(A: torch.Tensor, W: torch.Tensor, log_sigma: torch.Tensor,
                 dev: torch.device, dt: torch.dtype, posterior: bool,
                 gate: bool) -> tuple[torch.Tensor, ...]:
    """The kernel inputs ``(AW, const, inv_sigma)`` on ``dev`` in ``dt`` (:func:`_make_kernel`)."""
    A, W, log_sigma = A.to(dev, dt), W.to(dev, dt), log_sigma.to(dev, dt)
    rows = ([A] if posterior else []) + ([W] if posterior or gate else [])
    AW = torch.cat(rows, dim=0) if rows else A.new_zeros(0, A.shape[1])
    return AW, -0.5 * _LOG_2PI - log_sigma, torch.exp(-log_sigma)


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


def em_pass(
    chunks: RowChunks,
    A: torch.Tensor,
    W: torch.Tensor,
    log_sigma: torch.Tensor,
    *,
    activation: str = "linear",
    labels: torch.Tensor | LabelFn | None = None,
    R_out: torch.Tensor | ChunkedLabels | None = None,
    loglik_out: torch.Tensor | None = None,
    expert_stats: bool = False,
    gate: bool = False,
    gate_system: bool = True,
    gate_hessian: bool = True,
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
        If given, receive the posterior (an ``(n, k)`` tensor, or a :class:`ChunkedLabels`
        that keeps the computed blocks without a copy) and the per-sample log-likelihoods
        ``(n,)`` (only with ``labels=None``).
    expert_stats
        Accumulate :class:`ExpertStats` (linear experts).
    gate, gate_system, gate_hessian
        Accumulate the gate objective at ``W`` and, with ``gate_system``, its gradient and, with
        ``gate_hessian``, its negated Hessian.

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
    posterior = labels is None
    spec = _kernel_spec(k, d, activation, posterior, R_out is not None or loglik_out is not None,
                        expert_stats, gate, gate and gate_system, gate_hessian)
    AW, const, inv_sigma = _pass_inputs(A, W, log_sigma, chunks.device, chunks.dtype, posterior,
                                        gate)
    sums = _run_pass(chunks, spec, AW, const, inv_sigma, labels, R_out=R_out,
                     loglik_out=loglik_out)
    experts = sums.expert_stats(spec) if expert_stats else None
    gate_stats = _gate_stats(spec, sums, d, AW) if gate else None
    loglik, _, _ = sums.lin_parts(spec)
    return PassStats(loglik=loglik, experts=experts, gate=gate_stats)


def gate_pass(
    chunks: RowChunks, labels: torch.Tensor | LabelFn, W: torch.Tensor, *, system: bool,
    hessian: bool = True,
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
        Also accumulate the Newton system (its Grams in the pass's ``weighted_sums`` call).
    hessian
        With ``system``: the Hessian too (else the gradient alone, ``neg_hessian=None``).

    Returns
    -------
    GateStats
        Sums over samples.
    """
    k, d = W.shape
    spec = _kernel_spec(k, d, "linear", False, False, False, True, system, hessian)
    if W.dtype != chunks.dtype or W.device != chunks.device:
        W = W.to(chunks.device, chunks.dtype)
    sums = _run_pass(chunks, spec, W, W, W, labels)  # const, inv_sigma: unused without posterior
    return _gate_stats(spec, sums, d, W)


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
    G = stats.G
    M = G.clone()
    diag = M.diagonal(dim1=1, dim2=2)
    diag.add_(diag.mean(dim=1, keepdim=True).add_(1e-300).mul_(1e-10))
    L, info = torch.linalg.cholesky_ex(M)
    cand = torch.cholesky_solve(stats.b.unsqueeze(2), L).squeeze(2)
    if info.any():
        lst = torch.linalg.lstsq(M, stats.b.unsqueeze(2)).solution.squeeze(2)
        cand = torch.where((info != 0)[:, None], lst, cand)
    finite = torch.isfinite(cand).all(dim=1)
    ok = finite & (stats.mass > 1e-12 * n)
    # rows that are not finite are refused already; their change is computed at A_old
    safe = cand if bool(finite.all()) else torch.where(finite[:, None], cand, A_old)
    ok &= stats.sse_change(safe, A_old) <= 0
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
