"""What loaders do to the arrays they read: a fixed train/test split, a subsample of rows, and
standardisation with the training statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


def fixed_split(n: int, test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random train/test split of ``n`` rows, independent of the run's seed.

    Parameters
    ----------
    n
        Number of rows.
    test_fraction
        Fraction of rows in the test split (at least one row in each split).
    split_seed
        Seed of ``np.random.default_rng``; the same seed gives the same split everywhere.

    Returns
    -------
    tuple of ndarray
        Sorted row indices of the training and the test split.
    """
    if n < 2:
        raise DataError(f"cannot split {n} row(s) into a training and a test split")
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    perm = np.random.default_rng(split_seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def subsample(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of ``size`` of ``n`` rows drawn without replacement (``None``: all)."""
    if size is None or size >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


@dataclass(frozen=True)
class Standardized:
    """Arrays standardised with training statistics, and the statistics."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float
    y_scale: float


def standardize(X_train: np.ndarray, X_test: np.ndarray, y_train: np.ndarray,
                y_test: np.ndarray, *, inputs: bool = True, target: bool = True
                ) -> Standardized:
    """Centre and scale inputs and target with the **training** mean and standard deviation.

    Constant training columns keep scale 1. With ``inputs``/``target`` false the corresponding
    arrays are returned unchanged (mean 0, scale 1), so ``y_original = y * y_scale + y_mean``
    holds in every case.
    """
    d = X_train.shape[1]
    x_mean, x_scale = np.zeros(d), np.ones(d)
    if inputs:
        x_mean = X_train.mean(axis=0)
        x_scale = X_train.std(axis=0)
        x_scale[~(x_scale > 0)] = 1.0
        X_train, X_test = (X_train - x_mean) / x_scale, (X_test - x_mean) / x_scale
    y_mean, y_scale = 0.0, 1.0
    if target:
        y_mean = float(y_train.mean())
        y_scale = float(y_train.std()) or 1.0
        y_train, y_test = (y_train - y_mean) / y_scale, (y_test - y_mean) / y_scale
    return Standardized(X_train, X_test, y_train, y_test, x_mean, x_scale, y_mean, y_scale)
