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

What lives where:

* :mod:`.chunks`: :class:`RowChunks` and the cached transposed copy (:func:`cached_row_chunks`);
* :mod:`.spec`: :class:`KernelSpec` (what a chunk kernel computes), its inputs, :func:`activate`;
* :mod:`.elementwise`: the chunk kernel of a spec, over rows (to compile) and over blocks (eager);
* :mod:`.compiling`: which of them a pass runs (:func:`chunk_kernel`, :func:`compile_mode`);
* :mod:`.labels`: responsibilities as label functions (:class:`ChunkedLabels`,
  :func:`posterior_labels`);
* :mod:`.stats`: what a pass returns (:class:`ExpertStats`, :class:`GateStats`,
  :class:`PassStats`) and the experts' solve (:func:`solve_experts`);
* :mod:`.grams`: the sums a pass accumulates, their layout and the Grams and Hessian read from them;
* :mod:`.fused_pass`: passes through the fused native kernel (``FUSED`` switches them off);
* :mod:`.passes`: :func:`em_pass`, :func:`gate_pass`, :func:`weighted_sse_pass`;
* :mod:`.gradient`: :func:`chunked_nll_grad`, the chunked NLL gradient of any model.
"""

from __future__ import annotations

from .chunks import DEFAULT_CHUNK_SIZE, TRANSPOSED_CACHE_MAX_BYTES, RowChunks, cached_row_chunks
from .compiling import COMPILE_MIN_ROWS, chunk_kernel, compile_mode
from .gradient import chunked_nll_grad
from .labels import ChunkedLabels, LabelFn, posterior_labels
from .passes import em_pass, gate_pass, weighted_sse_pass
from .spec import KernelSpec, activate
from .stats import ExpertStats, GateStats, PassStats, solve_experts

__all__ = [
    "COMPILE_MIN_ROWS",
    "DEFAULT_CHUNK_SIZE",
    "TRANSPOSED_CACHE_MAX_BYTES",
    "ChunkedLabels",
    "ExpertStats",
    "GateStats",
    "KernelSpec",
    "LabelFn",
    "PassStats",
    "RowChunks",
    "activate",
    "cached_row_chunks",
    "chunk_kernel",
    "chunked_nll_grad",
    "compile_mode",
    "em_pass",
    "gate_pass",
    "posterior_labels",
    "solve_experts",
    "weighted_sse_pass",
]
