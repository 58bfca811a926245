"""The chunk kernel of a :class:`~.spec.KernelSpec` in its two forms: over rows of samples
(:func:`_make_kernel`, for ``torch.compile`` to fuse) and over ``(k, c)`` blocks
(:func:`_make_stacked_kernel`, eager). Both map a chunk to the rows whose sums a pass needs."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .spec import KernelSpec, activate

__all__: list[str] = []


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
    sums) a pass needs, and :func:`~.passes._run_pass` reduces them with
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
    rounding (tests/plugins/models/test_kernels.py).
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
