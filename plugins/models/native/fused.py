"""The fused E-step / gate kernel (:class:`FusedPass`) and its vectorised exp and log.

One native call per chunk computes in registers what the torch chunk kernels of
:mod:`~moebench_plugins.models.kernels` compute as ``(k, c)`` temporaries and sums them against
the chunk with the register tiles of :func:`~.sums.weighted_sums` (CPU float64, at most
:data:`FUSED_MAX_EXPERTS` experts).
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from .library import native_library, native_supported
from .ones import ones_buffer
from .pairs import Pairs

__all__ = ["FUSED_MAX_EXPERTS", "FusedPass", "fused_supported", "vector_exp", "vector_log"]


#: Most experts the fused kernel takes (its per-sample rows live in registers and on the stack).
FUSED_MAX_EXPERTS = 16
_F_POSTERIOR, _F_EXPERTS, _F_GATE, _F_SYSTEM, _F_HESSIAN = 1, 2, 4, 8, 16
_BLK = 256  # the C source's BLK: the row of ones passed along covers at least one block


def fused_supported(device: torch.device | str, dtype: torch.dtype, k: int) -> bool:
    """Whether :class:`FusedPass` runs for chunks like these (CPU float64, ``k <= 16``)."""
    return (dtype == torch.float64 and 1 <= k <= FUSED_MAX_EXPERTS
            and native_supported(device, dtype))


def _elementwise(name: str, x: torch.Tensor) -> torch.Tensor:
    if not fused_supported(x.device, x.dtype, 1):
        raise RuntimeError("the native kernels need CPU float64 tensors and a C compiler")
    x = x.contiguous()
    y = torch.empty_like(x)
    getattr(native_library(), name)(x.numel(), x.data_ptr(), y.data_ptr())
    return y


def vector_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` by the fused kernel's vectorised exponential (within 1 ulp; for the tests).

    Parameters
    ----------
    x
        A CPU float64 tensor.

    Returns
    -------
    torch.Tensor
        ``exp(x)``, same shape.
    """
    return _elementwise("moebench_vexp_double", x)


def vector_log(x: torch.Tensor) -> torch.Tensor:
    """``log(x)`` by the fused kernel's vectorised logarithm (within 1 ulp for positive normal
    ``x``, NaN for zero, negative and subnormal ``x``; for the tests).

    Parameters
    ----------
    x
        A CPU float64 tensor.

    Returns
    -------
    torch.Tensor
        ``log(x)``, same shape.
    """
    return _elementwise("moebench_vlog_double", x)


class FusedPass:
    """One native call per chunk for the E-step and gate kernel and its weighted sums.

    Per block of 256 samples the C kernel computes in registers what the torch chunk kernel of
    :mod:`~moebench_plugins.models.kernels` computes as ``(k, c)`` temporaries (logits, gate
    log-softmax, Gaussian log-densities, responsibilities, log-likelihood, gate gradient rows and
    Hessian weights) and sums them against the chunk with the register tiles of
    :func:`~.sums.weighted_sums`. Its sums, per :attr:`groups` entry:

    ``grad``
        ``(k - 1, nf)``: ``sum_c (r_a - s p_a) f`` (with ``system``).
    ``totals``
        ``(t, 1)``: ``sum_c sum_i r_i log p_i`` (with ``gate``), then the log-likelihood (with
        ``posterior``).
    ``experts``
        ``(k, (nf + 1)(nf + 2) / 2 + 1)``: the Grams of ``[f; y]`` weighted by the
        responsibilities, packed as ``Pairs.packed(nf + 1, ones=True)`` (with ``expert_stats``).
    ``hessian``
        ``(k (k - 1) / 2, nf (nf + 1) / 2)``: the Grams of ``f`` weighted by
        ``s p_a (delta_ab - p_b)``, ``a <= b < k - 1``, packed as ``Pairs.packed(nf)`` (with
        ``system`` and ``hessian``).

    Parameters
    ----------
    k, nf
        Experts and chunk features (rows of ``f``; the chunk has one more row, ``y``).
    posterior
        Compute the posterior from linear experts (else the labels are given).
    expert_stats, gate, system, hessian
        What to accumulate, as :class:`~moebench_plugins.models.kernels.KernelSpec`
        (``hessian``: its ``gate_hessian``).
    """

    def __init__(self, k: int, nf: int, *, posterior: bool, expert_stats: bool, gate: bool,
                 system: bool, hessian: bool = True):
        if not 1 <= k <= FUSED_MAX_EXPERTS:
            raise ValueError(f"the fused kernel takes 1 to {FUSED_MAX_EXPERTS} experts, got {k}")
        self.k, self.nf, self.posterior = k, nf, posterior
        system = system and gate and k > 1
        ones = nf + 1
        groups: list[tuple[str, int, Pairs]] = []
        if system:
            groups.append(("grad", k - 1, Pairs(tuple(range(nf)), (ones,) * nf)))
        n_totals = int(gate) + int(posterior)
        if n_totals:
            groups.append(("totals", n_totals, Pairs((ones,), (ones,))))
        if expert_stats:
            groups.append(("experts", k, Pairs.packed(nf + 1, ones=True)))
        if system and hessian:
            groups.append(("hessian", k * (k - 1) // 2, Pairs.packed(nf)))
        self.groups = groups
        self.flags = ((_F_POSTERIOR if posterior else 0) | (_F_EXPERTS if expert_stats else 0)
                      | (_F_GATE if gate else 0) | (_F_SYSTEM if system else 0)
                      | (_F_HESSIAN if hessian else 0))
        ng = len(groups)
        idx = [pairs.indices(torch.device("cpu")) for _, _, pairs in groups]
        self._keep = idx
        ptr = ctypes.c_void_p
        self._m = (ctypes.c_int * max(ng, 1))(*[m for _, m, _ in groups])
        self._np = (ctypes.c_int * max(ng, 1))(*[len(p) for _, _, p in groups])
        self._pa = (ptr * max(ng, 1))(*[a.data_ptr() for a, _ in idx])
        self._pb = (ptr * max(ng, 1))(*[b.data_ptr() for _, b in idx])
        sizes = [m * len(pairs) for _, m, pairs in groups]
        self._offsets = [sum(sizes[:g]) for g in range(ng)]
        self._size = sum(sizes)
        self._views = [(name, o, m, len(pairs))
                       for (name, m, pairs), o in zip(groups, self._offsets, strict=True)]
        self._out = ptr * max(ng, 1)

    def new_sums(self, like: torch.Tensor) -> torch.Tensor:
        """Zeroed accumulators of every group, one flat buffer (:meth:`views` cuts it)."""
        return like.new_zeros(self._size)

    def views(self, sums: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``(m, len(pairs))`` accumulators of the groups in ``sums``, by name."""
        base = sums.storage_offset()
        return {name: sums.as_strided((m, p), (p, 1), base + o) for name, o, m, p in self._views}

    def __call__(self, Z: torch.Tensor, AW: torch.Tensor, const: torch.Tensor,
                 inv_sigma: torch.Tensor, labels: torch.Tensor | None,
                 sums: torch.Tensor, R_out: torch.Tensor | None = None,
                 loglik_out: torch.Tensor | None = None) -> None:
        """Add one chunk's sums to ``sums`` (:meth:`new_sums`).

        Parameters
        ----------
        Z
            ``(nf + 1, c)`` chunk ``[f; y]``, CPU float64, rows contiguous.
        AW
            ``[A; W]`` (posterior) or ``W``, ``(2k or k, nf)``.
        const, inv_sigma
            ``-log(2 pi) / 2 - log sigma_i`` and ``1 / sigma_i``, ``(k,)`` (posterior only).
        labels
            ``(k, c)`` given responsibilities, rows contiguous (without the posterior).
        sums
            The accumulators (:meth:`new_sums`).
        R_out, loglik_out
            ``(k, c)`` and ``(c,)`` outputs of the posterior and the log-likelihoods, rows
            contiguous, or ``None``.
        """
        k, c = self.k, Z.shape[1]
        if Z.shape[0] != self.nf + 1 or Z.stride(1) != 1 or Z.dtype != torch.float64:
            raise ValueError(f"Z must be ({self.nf + 1}, c) float64 with contiguous rows")
        for t in (labels, R_out, loglik_out):
            if t is not None and (t.stride(-1) != 1 or t.shape[-1] != c or t.dtype != Z.dtype):
                raise ValueError("labels and outputs must be float64 rows of the chunk's length")
        if (labels is None) == (not self.posterior):
            raise ValueError("labels are needed exactly when the posterior is not computed")
        if sums.shape != (self._size,) or not sums.is_contiguous() or sums.dtype != Z.dtype:
            raise ValueError(f"sums must be the flat buffer of new_sums(), ({self._size},)")
        logits = self.flags & (_F_POSTERIOR | _F_GATE)
        need = (2 * k if self.posterior else k) * self.nf if logits else 0
        if AW.numel() < need or (self.posterior and min(const.numel(), inv_sigma.numel()) < k):
            raise ValueError("AW, const or inv_sigma are too small for the pass")
        if not AW.is_contiguous():
            AW = AW.contiguous()
        if not (const.is_contiguous() and inv_sigma.is_contiguous()):
            const, inv_sigma = const.contiguous(), inv_sigma.contiguous()
        ptr = ctypes.c_void_p
        item = Z.element_size()

        def rows(t: torch.Tensor | None) -> Any:
            if t is None:
                return None
            base, step = t.data_ptr(), t.stride(0) * item
            return (ptr * k)(*[base + j * step for j in range(k)])

        ones = ones_buffer(max(c, _BLK), Z)
        base = sums.data_ptr()
        rc = native_library().moebench_fused_double(
            c, k, self.nf, Z.data_ptr(), Z.stride(0), AW.data_ptr(), const.data_ptr(),
            inv_sigma.data_ptr(), rows(labels), self.flags, rows(R_out),
            None if loglik_out is None else loglik_out.data_ptr(), len(self.groups), self._m,
            self._np, self._pa, self._pb, self._out(*[base + o * item for o in self._offsets]),
            ones.data_ptr(), torch.get_num_threads())
        if rc == -1:
            raise MemoryError("moebench's fused kernel could not allocate its scratch memory")
        if rc != 0:
            raise RuntimeError(f"moebench's fused kernel refused the call (code {rc})")
