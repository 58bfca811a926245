"""Synthetic data from a mixture of multinomial-logistic experts with a softmax gate.

``x ~ N(0, I_d)``; ``z ~ softmax(W x)`` with ``w_k = 0``; ``y ~ softmax(B_z x)``. Every row of
every ``B_i`` (``C x d``) is uniform on the sphere of radius ``expert_scale``; the free gate rows
are uniform on the sphere of radius ``gate_norm``. This is the multi-class version of the mixture
of logistic experts of Fruytier et al. (2025).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import numpy as np
from pydantic import Field, model_validator

from moebench import Data, Dataset, ModelSpec, Params, hookimpl

from .synthetic import require_more_samples_than_experts

__all__ = ["SyntheticLogisticMoE"]

CITATION = (
    "Q. Fruytier, A. Mokhtari, S. Sanghavi. Learning Mixtures of Experts with EM: A Mirror "
    "Descent Perspective. ICML 2025."
)


def _rows_to_norm(M: np.ndarray, norm: float) -> np.ndarray:
    return M * (norm / np.maximum(np.linalg.norm(M, axis=-1, keepdims=True), 1e-300))


class SyntheticLogisticMoE(Dataset):
    """Samples from a k-expert multinomial-logistic MoE with known parameters."""

    name = "synthetic-logistic-moe"
    summary = "k multinomial-logistic experts with a softmax gate, x ~ N(0, I)"
    task = "classification"

    class Params(Params):
        """Parameters of the synthetic logistic MoE generator."""

        n: int = Field(2000, ge=1, description="number of training samples")
        n_test: int = Field(1000, ge=1, description="number of test samples")
        d: int = Field(10, ge=1, description="input dimension")
        k: int = Field(2, ge=1, description="number of experts")
        n_classes: int = Field(3, ge=2, description="number of classes C")
        expert_scale: float = Field(
            3.0, ge=0, description="norm of every row of every expert matrix B_i (two rows then "
            "differ by about 3 sqrt(2) = 4.2, close to the norm 4 of Fruytier et al.)"
        )
        gate_norm: float = Field(
            4.0, ge=0, description="norm of each free gate vector (4 in Fruytier et al.)"
        )

        @model_validator(mode="after")
        def _more_samples_than_experts(self) -> Self:
            require_more_samples_than_experts(self.n, self.k)
            return self

    def generate(self, seed: int) -> dict[str, np.ndarray]:
        """Draw parameters and ``n + n_test`` samples with ``np.random.default_rng(seed)``.

        Parameters
        ----------
        seed
            Seed of the numpy generator; the same seed gives identical arrays.

        Returns
        -------
        dict
            ``B`` ``(k, C, d)``, ``W`` ``(k, d)`` (last row zero), ``X`` ``(m, d)``, latent
            experts ``z`` and labels ``y`` (``int64``, shape ``(m,)``), training rows first.
        """
        p = self.params
        rng = np.random.default_rng(seed)
        k, d, C, m = p.k, p.d, p.n_classes, p.n + p.n_test
        B = _rows_to_norm(rng.standard_normal((k, C, d)), p.expert_scale)
        W = np.vstack([_rows_to_norm(rng.standard_normal((k - 1, d)), p.gate_norm),
                       np.zeros((1, d))])
        X = rng.standard_normal((m, d))
        # Gumbel-max: argmax_i (logit_i + Gumbel noise) ~ softmax(logits).
        z = np.argmax(X @ W.T + rng.gumbel(size=(m, k)), axis=1)
        logits = np.einsum("nd,ncd->nc", X, B[z])
        y = np.argmax(logits + rng.gumbel(size=(m, C)), axis=1).astype(np.int64)
        return {"B": B, "W": W, "X": X, "z": z, "y": y}

    def load(self, seed: int) -> Data:
        """Train/test arrays, the generating model and its true parameters."""
        p = self.params
        s = self.generate(seed)
        n = p.n
        return Data(
            X_train=s["X"][:n],
            y_train=s["y"][:n],
            X_test=s["X"][n:],
            y_test=s["y"][n:],
            task="classification",
            model=ModelSpec("logistic-moe", {"k": p.k}),
            truth={"B": s["B"], "W": s["W"]},
            meta={
                "n": p.n,
                "n_test": p.n_test,
                "d": p.d,
                "k": p.k,
                "n_classes": p.n_classes,
                "expert_scale": p.expert_scale,
                "gate_norm": p.gate_norm,
                "source": "synthetic mixture of multinomial-logistic experts",
                "citation": CITATION,
            },
        )


@hookimpl
def register_datasets(register: Callable[[type], None]) -> None:
    """Register :class:`SyntheticLogisticMoE`."""
    register(SyntheticLogisticMoE)
