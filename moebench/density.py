"""Input densities, for methods built on score functions (Janzamin, Sedghi & Anandkumar 2014).

The spectral method of Makkuva et al. (2019) cross-correlates the output with the score
functions ``S_m(x) = (-1)^m grad^m p(x) / p(x)`` of the input density. For a mixture of
unit-covariance Gaussians ``p = sum_j pi_j N(mu_j, I)`` they are

.. math::

    S_m(x) = \\sum_j r_j(x)\\, He_m(x - \\mu_j),

with ``r_j(x)`` the posterior probability of component ``j`` and ``He_m`` the Hermite tensors
(``He_2(u) = u u^T - I``, ``He_3(u) = u^{\\otimes 3} - \\mathrm{sym}(u \\otimes I)``). The
standard Gaussian is the one-component case with ``mu = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class GaussianMixtureDensity:
    """``x ~ sum_j weights[j] * N(means[j], I_d)``.

    Attributes
    ----------
    weights
        Mixing proportions, shape ``(J,)``, summing to one.
    means
        Component means, shape ``(J, d)``.
    """

    weights: np.ndarray
    means: np.ndarray

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=float)
        m = np.atleast_2d(np.asarray(self.means, dtype=float))
        if w.ndim != 1 or m.shape[0] != w.shape[0]:
            raise ValueError(f"weights {w.shape} and means {m.shape} disagree")
        if np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise ValueError("weights must be non-negative and sum to one")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", m)

    @classmethod
    def standard(cls, d: int) -> GaussianMixtureDensity:
        """``N(0, I_d)``."""
        return cls(np.ones(1), np.zeros((1, d)))

    @property
    def is_standard(self) -> bool:
        return self.weights.shape[0] == 1 and not np.any(self.means)

    def responsibilities(self, X: torch.Tensor) -> torch.Tensor:
        """``r_j(x_n)``, shape ``(n, J)`` (log-sum-exp normalised)."""
        means = torch.as_tensor(self.means, dtype=X.dtype, device=X.device)
        logw = torch.log(torch.as_tensor(self.weights, dtype=X.dtype, device=X.device))
        # -||x - mu||^2 / 2 up to the common -||x||^2 / 2 term
        logits = logw + X @ means.T - 0.5 * (means * means).sum(dim=1)
        return torch.softmax(logits, dim=1)

    def centers(self, X: torch.Tensor) -> torch.Tensor:
        """``mu_j`` as a tensor like ``X``, shape ``(J, d)``."""
        return torch.as_tensor(self.means, dtype=X.dtype, device=X.device)
