"""A model's mean NLL and its gradient, accumulated chunk by chunk (:func:`chunked_nll_grad`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .chunks import DEFAULT_CHUNK_SIZE

__all__ = ["chunked_nll_grad"]


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
