"""The ``Dataset`` interface, the arrays a dataset produces, and their validation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from .density import GaussianMixtureDensity
from .errors import DataError
from .params import NoParams, Params

Task = Literal["regression", "classification"]


@dataclass(frozen=True)
class ModelSpec:
    """A model family by registered name, with its hyper-parameters (``k``, activation, ...)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    """Train/test arrays of one dataset instance.

    Attributes
    ----------
    X_train, X_test
        Inputs, shape ``(n, d)``, floating point. The test split may be empty (``(0, d)``: a
        dataset trained on every row, e.g. ``table`` with ``test_fraction: 0``); metrics on the
        test split are then absent (NaN, see :attr:`moebench.Metric.uses_test`).
    y_train, y_test
        Targets, shape ``(n,)``: real values for regression, integer labels for classification.
    task
        ``"regression"`` or ``"classification"``.
    model
        The model family that generated the data (synthetic) or that fits it by default (real).
    truth
        Ground-truth parameters in ``model``'s layout, when known; otherwise ``None``.
    meta
        Provenance: ``source``, ``citation``, units, standardisation statistics
        (``y_mean``, ``y_scale`` for targets standardised with training statistics), ...
    input_density
        The inputs' density when it is known (synthetic data), for score-function methods;
        ``None`` when unknown.

    Raises
    ------
    DataError
        On construction, when the arrays are malformed (shapes, non-numeric, NaN or infinite
        values, an empty training split) or the training data are degenerate: a single training
        row, no feature or only constant feature columns (one constant column among others is
        fine), a constant regression target ``y_train``, or a single class in a classification
        training set. Whether there are enough rows for the model's experts is checked by
        :func:`check_fit_possible` once the model is known.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: Task
    model: ModelSpec
    truth: dict[str, np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    input_density: GaussianMixtureDensity | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            X = getattr(self, f"X_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(X, np.ndarray) or X.ndim != 2:
                raise DataError(f"X_{split} must be a 2-d array (n, d), got {_shape(X)}")
            if not isinstance(y, np.ndarray) or y.ndim != 1:
                raise DataError(f"y_{split} must be a 1-d array (n,), got {_shape(y)}")
            if X.shape[0] != y.shape[0]:
                raise DataError(
                    f"X_{split} has {X.shape[0]} rows but y_{split} has {y.shape[0]}"
                )
            if X.shape[0] == 0 and split == "train":
                raise DataError(f"the {split} split is empty")
            for name, a in ((f"X_{split}", X), (f"y_{split}", y)):
                if not np.issubdtype(a.dtype, np.number):
                    raise DataError(f"{name} is not numeric (dtype {a.dtype})")
                bad = _count_nonfinite(a)
                if bad:
                    raise DataError(f"{name} contains {bad} NaN or infinite values")
        if self.X_train.shape[1] != self.X_test.shape[1]:
            raise DataError(
                f"X_train has {self.X_train.shape[1]} features but X_test has "
                f"{self.X_test.shape[1]}"
            )
        self._check_degenerate()

    def _check_degenerate(self) -> None:
        """DataError for training data nothing can be learned from (see :class:`Data`)."""
        X, y = self.X_train, self.y_train
        n = int(X.shape[0])
        if n < 2:
            raise DataError(
                "the training split has a single row: nothing can be fitted (or validated) from "
                "one example; use more training rows (check n_train / test_fraction / the "
                "split column, or a larger file)"
            )
        if X.shape[1] == 0:
            raise DataError("X_train has no feature columns; give the dataset some features")
        if _all_rows_equal(X):
            raise DataError(
                f"every feature column of X_train is constant (all {n} training rows have the "
                "same inputs): the inputs carry no information; check the feature columns, the "
                "file or the subsample (a constant column next to varying ones is fine)"
            )
        if self.task == "regression":
            lo, hi = float(np.min(y)), float(np.max(y))
            if lo == hi:
                raise DataError(
                    f"the regression target y_train is constant ({lo!r} in all {n} training "
                    "rows): there is nothing to learn; check the target column (or its "
                    "standardisation), the split, or use more rows"
                )
        elif self.task == "classification":
            labels = np.unique(np.asarray(y))
            if labels.size < 2:
                raise DataError(
                    f"the classification training set has a single class ({labels[0]!r} in all "
                    f"{n} training rows): a classifier needs at least 2 classes; check the target "
                    "column, the split or the subsample (use more training rows)"
                )

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def has_test(self) -> bool:
        """Whether there is a test split (``False``: every row is used for training)."""
        return int(self.X_test.shape[0]) > 0


#: Rows per block when validating, so that memory-mapped arrays are checked block by block.
_VALIDATE_ROWS = 1 << 18


def _count_nonfinite(a: np.ndarray) -> int:
    """Number of NaN or infinite entries, counted in row blocks (no array-sized temporary)."""
    bad = 0
    for start in range(0, a.shape[0], _VALIDATE_ROWS):
        block = np.asarray(a[start : start + _VALIDATE_ROWS])
        bad += int(block.size - np.count_nonzero(np.isfinite(block)))
    return bad


def _all_rows_equal(X: np.ndarray) -> bool:
    """Whether every row equals the first (all columns constant), checked block by block."""
    first = np.asarray(X[:1])
    for start in range(0, X.shape[0], _VALIDATE_ROWS):
        if np.any(np.asarray(X[start : start + _VALIDATE_ROWS]) != first):
            return False
    return True


def check_fit_possible(data: Data, n_experts: int) -> None:
    """Check that ``data`` has enough training rows for a mixture of ``n_experts`` experts.

    :func:`moebench.cell.unit.prepare_unit` calls it once the model (and its number of experts
    ``k``) is known; checks that need only the data are made by :class:`Data` itself.

    Parameters
    ----------
    data
        The loaded data.
    n_experts
        The model's number of experts ``k``.

    Raises
    ------
    DataError
        ``n_train <= n_experts``; the message names both numbers and what to change.
    """
    n_train = int(data.X_train.shape[0])
    if n_train <= n_experts:
        few = "fewer than" if n_train < n_experts else "as many as"
        raise DataError(
            f"{n_train} training rows are {few} the model's {n_experts} experts "
            f"(n_train={n_train}, k={n_experts}): a mixture needs more rows than experts to "
            f"be fitted (as the synthetic datasets' n > k); use more training rows (n_train, "
            f"test_fraction, a larger file) or fewer experts (model k < {n_train})"
        )


def _shape(a: object) -> str:
    return f"shape {a.shape}" if hasattr(a, "shape") else type(a).__name__


class Dataset(ABC):
    """A source of :class:`Data`: a generator (synthetic) or a loader (real data).

    Subclasses set ``name``, ``summary`` and ``Params`` (a :class:`moebench.params.Params`
    model documenting every parameter) and implement :meth:`load`. The same ``seed`` must give
    the same arrays.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    task: ClassVar[Task] = "regression"
    Params: ClassVar[type[Params]] = NoParams

    def __init__(self, params: Params | None = None):
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def load(self, seed: int) -> Data:
        """Produce the train/test arrays for this ``seed``.

        Raises
        ------
        moebench.errors.DataUnavailable
            The files are not on this machine; the message says where to put them.
        """
