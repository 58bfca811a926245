"""One pass over the row chunks: the E-step and the M-step statistics (:func:`em_pass`), the gate's
objective and Newton system (:func:`gate_pass`) and the exact weighted residuals
(:func:`weighted_sse_pass`). A pass runs the fused native kernel where it applies
(:mod:`.fused_pass`), else the chunk kernel of its :class:`~.spec.KernelSpec` and one
:func:`~moebench_plugins.models.native.weighted_sums` call per chunk (:func:`_run_pass`)."""

from __future__ import annotations

import torch

from ..native import Pairs, native_supported, weighted_sums
from .chunks import RowChunks
from .compiling import chunk_kernel
from .fused_pass import _fused_applies, _run_fused_pass
from .grams import _gate_stats, _packed_layout, _PassSums, _stacked_gram
from .labels import ChunkedLabels, LabelFn
from .spec import KernelSpec, _kernel_spec, _pass_inputs
from .stats import GateStats, PassStats

__all__ = ["em_pass", "gate_pass", "weighted_sse_pass"]

#: Elements of the stacked ``[w_j z]`` temporary of one GEMM (large ``d``): 16 MB in float64.
_STACKED_ELEMENTS = 1 << 21


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
