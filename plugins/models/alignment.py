"""Distance to the truth up to the label switching of experts (shared by every family)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

#: Exhaustive search over permutations up to this many experts (7! = 5040), Hungarian beyond.
MAX_EXHAUSTIVE_K = 7


def permuted_error(
    E: torch.Tensor, E_t: torch.Tensor, W: torch.Tensor, W_t: torch.Tensor
) -> float:
    """``min_pi ||E[pi] - E_t||_F + ||W[pi] - W[pi(k)] - W_t||_F`` over permutations ``pi``.

    ``E`` holds one flattened expert per row; the gates are compared after re-referencing to
    the expert that comes last after the permutation (softmax is invariant to adding a common
    vector to all rows), and ``W_t`` must already be re-referenced to its last row. The search
    is exhaustive for ``k <= MAX_EXHAUSTIVE_K``; beyond, the permutation is the optimal
    assignment of the experts (Hungarian algorithm on squared distances).
    """
    k = E.shape[0]
    if k <= MAX_EXHAUSTIVE_K:
        perms = torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long)
    else:
        cost = torch.cdist(E, E_t).square().numpy()
        rows, cols = linear_sum_assignment(cost)
        perm = np.empty(k, dtype=np.int64)
        perm[cols] = rows
        perms = torch.as_tensor(perm)[None, :]
    best = math.inf
    chunk = max(1, 2_000_000 // max(1, k * (E.shape[1] + W.shape[1])))
    for start in range(0, perms.shape[0], chunk):
        P = perms[start : start + chunk]
        Wp = W[P]
        Wp = Wp - Wp[:, -1:, :]
        err = (E[P] - E_t).square().sum(dim=(1, 2)).sqrt()
        err = err + (Wp - W_t).square().sum(dim=(1, 2)).sqrt()
        best = min(best, float(err.min()))
    return best
