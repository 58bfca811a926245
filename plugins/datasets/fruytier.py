"""Synthetic SymMoLinE / SymMoLogE data (Fruytier, Mokhtari, Sanghavi, ICML 2025, section 5).

The paper samples ``n = 10^3`` points from a SymMoLinE "with known additive unit Gaussian noise"
and true parameters ``beta*, w* in R^10`` with ``||beta*|| = ||w*|| = 4``. Here ``x ~ N(0, I_d)``,
``beta*`` and ``w*`` are independent uniformly random directions scaled to norm ``r``, the latent
``z = +1`` with probability ``sigma(w*.x)`` (else ``-1``), and

* ``symmoline``: ``y = z beta*.x + sigma * eps``, ``eps ~ N(0, 1)``;
* ``symmologe``: ``y = +1`` with probability ``sigma(z beta*.x)``, else ``-1``; stored as the class
  index ``(y + 1) / 2`` in ``{0, 1}`` (moebench's classification convention; the
  ``symmologe`` model reads ``y > 0`` as ``+1``).

All randomness comes from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import numpy as np
from pydantic import Field, model_validator

from moebench import Data, Dataset, ModelSpec, Params, hookimpl

__all__ = ["SymMoLinEData", "SymMoLogEData", "CITATION"]

CITATION = (
    "Q. Fruytier, A. Mokhtari, S. Sanghavi. Learning Mixtures of Experts with EM: A Mirror "
    "Descent Perspective. ICML 2025, PMLR 267:17690-17726."
)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))  # overflow-free logistic


def _direction(rng: np.random.Generator, d: int, norm: float) -> np.ndarray:
    v = rng.standard_normal(d)
    return v * (norm / max(float(np.linalg.norm(v)), 1e-300))


class _SymmetricParams(Params):
    n: int = Field(1000, ge=1, description="number of training samples")
    n_test: int = Field(1000, ge=1, description="number of test samples")
    d: int = Field(10, ge=1, description="input dimension")
    r: float = Field(4.0, ge=0, description="norm of the true parameters, ||beta*|| = ||w*|| = r")

    @model_validator(mode="after")
    def _more_samples_than_experts(self) -> Self:
        if self.n <= 2:
            raise ValueError(
                f"n={self.n} training samples for the 2 experts of a symmetric mixture: n must "
                "be larger than 2 (each expert is fitted on the samples it draws); raise n"
            )
        return self


class _SymmetricData(Dataset):
    """Shared sampling of ``beta*``, ``w*``, ``x`` and ``z``."""

    model_name: str = ""

    def _draw(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                        np.random.Generator]:
        p = self.params
        rng = np.random.default_rng(seed)
        beta = _direction(rng, p.d, p.r)
        w = _direction(rng, p.d, p.r)
        X = rng.standard_normal((p.n + p.n_test, p.d))
        z = np.where(rng.random(p.n + p.n_test) < _sigmoid(X @ w), 1.0, -1.0)
        return beta, w, X, z, rng

    def _data(self, X: np.ndarray, y: np.ndarray, beta: np.ndarray, w: np.ndarray,
              model_params: dict[str, Any], meta: dict[str, Any]) -> Data:
        n = self.params.n
        return Data(
            X_train=X[:n],
            y_train=y[:n],
            X_test=X[n:],
            y_test=y[n:],
            task=self.task,
            model=ModelSpec(self.model_name, model_params),
            truth={"beta": beta, "w": w},
            meta={
                "n": self.params.n,
                "n_test": self.params.n_test,
                "d": self.params.d,
                "r": self.params.r,
                "source": f"synthetic {self.model_name} (Fruytier et al. 2025, section 5)",
                "citation": CITATION,
                **meta,
            },
        )


class SymMoLinEData(_SymmetricData):
    """Samples from a SymMoLinE with known noise and ``||beta*|| = ||w*|| = r``."""

    name = "symmoline"
    summary = "symmetric mixture of 2 linear experts (Fruytier et al. 2025), x ~ N(0, I)"
    task = "regression"
    model_name = "symmoline"

    class Params(_SymmetricParams):
        """Parameters of the SymMoLinE generator."""

        sigma: float = Field(1.0, gt=0, description="noise standard deviation (known)")

    def load(self, seed: int) -> Data:
        """Train/test arrays, the model ``symmoline`` and the true ``beta``, ``w``."""
        beta, w, X, z, rng = self._draw(seed)
        y = z * (X @ beta) + self.params.sigma * rng.standard_normal(X.shape[0])
        return self._data(X, y, beta, w, {"sigma": self.params.sigma},
                          {"sigma": self.params.sigma})


class SymMoLogEData(_SymmetricData):
    """Samples from a SymMoLogE with ``||beta*|| = ||w*|| = r``; labels are class indices."""

    name = "symmologe"
    summary = "symmetric mixture of 2 logistic experts (Fruytier et al. 2025), x ~ N(0, I)"
    task = "classification"
    model_name = "symmologe"

    class Params(_SymmetricParams):
        """Parameters of the SymMoLogE generator."""

    def load(self, seed: int) -> Data:
        """Train/test arrays (labels ``0`` for ``y = -1``, ``1`` for ``y = +1``), the model
        ``symmologe`` and the true ``beta``, ``w``."""
        beta, w, X, z, rng = self._draw(seed)
        positive = rng.random(X.shape[0]) < _sigmoid(z * (X @ beta))
        y = positive.astype(np.int64)
        return self._data(X, y, beta, w, {}, {"n_classes": 2, "labels": "0: y=-1, 1: y=+1"})


@hookimpl
def register_datasets(register: Callable[[type], None]) -> None:
    """Register the ``symmoline`` and ``symmologe`` generators."""
    register(SymMoLinEData)
    register(SymMoLogEData)
