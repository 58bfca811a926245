"""Passes through the fused native kernel (:class:`~moebench_plugins.models.native.FusedPass`):
one native call per chunk for the E-step, the gate kernel and all their weighted sums."""

from __future__ import annotations

import functools

import torch

from ..native import FusedPass, fused_supported
from .chunks import RowChunks
from .compiling import compile_mode
from .grams import _NATIVE_MAX_SUMS, _PassSums
from .labels import ChunkedLabels, LabelFn
from .spec import KernelSpec

__all__ = ["FUSED"]

#: Whether passes use the fused native kernel where it applies (the tests switch it off to compare).
FUSED = True


@functools.cache
def _fused_pass(spec: KernelSpec) -> FusedPass:
    """The :class:`~moebench_plugins.models.native.FusedPass` of ``spec``, built once per spec."""
    return FusedPass(spec.k, spec.n_features, posterior=spec.posterior,
                     expert_stats=spec.expert_stats, gate=spec.gate, system=spec.gate_system,
                     hessian=spec.gate_hessian)


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
    """:func:`~.passes._run_pass` through the fused native kernel: one call per chunk."""
    k = spec.k
    fused = _fused_pass(spec)
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
