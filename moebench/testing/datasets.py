"""Conformance checks for dataset plugins: valid arrays, determinism, a real train/test split,
a registered model family (see :func:`check_dataset`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from .. import plugins
from ..dataset import Data, Dataset
from ..errors import DataError, DataUnavailable
from .harness import (
    available_devices,
    build_model,
    component_class,
    component_label,
    run_checks,
    type_name,
)

#: Fraction of test rows that may also occur (same inputs and target) in the training split.
MAX_SHARED_TEST_ROWS = 0.5


def _load(cls: type[Dataset], params: dict[str, Any], seed: int) -> Data:
    dataset = cls(cls.Params.model_validate(params))
    try:
        data = dataset.load(seed)
    except DataError as exc:
        if isinstance(exc, DataUnavailable):
            raise
        raise AssertionError(f"load({seed}) produced invalid data: {exc}") from exc
    assert isinstance(data, Data), (
        f"load({seed}) returned {type_name(data)}: return a moebench.Data"
    )
    return data


def _check_arrays(data: Data, task: str) -> None:
    for split in ("train", "test"):
        X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
        assert isinstance(X, np.ndarray) and X.ndim == 2, (
            f"X_{split} must be a 2-d numpy array (n, d)"
        )
        assert isinstance(y, np.ndarray) and y.ndim == 1, f"y_{split} must be a 1-d numpy array"
        assert X.shape[0] == y.shape[0], f"X_{split} and y_{split} have different numbers of rows"
        assert np.issubdtype(X.dtype, np.floating), (
            f"X_{split} has dtype {X.dtype}: give float inputs (X.astype(np.float64))"
        )
        assert np.isfinite(X).all() and np.isfinite(y.astype(float)).all(), (
            f"X_{split} or y_{split} has NaN or infinite values: clean or drop them in load()"
        )
        if task == "regression":
            assert np.issubdtype(y.dtype, np.floating), (
                f"y_{split} has dtype {y.dtype}: a regression target must be float"
            )
        else:
            assert np.issubdtype(y.dtype, np.integer), (
                f"y_{split} has dtype {y.dtype}: classification labels must be integers 0..C-1"
            )
            n_classes = data.meta.get("n_classes")
            assert isinstance(n_classes, int) and n_classes >= 2, (
                "classification data must set meta['n_classes'] (an int >= 2)"
            )
            if y.size:
                assert y.min() >= 0 and y.max() < n_classes, (
                    f"y_{split} has labels outside 0..{n_classes - 1} (meta['n_classes'])"
                )
    assert data.X_train.shape[1] == data.X_test.shape[1], (
        "X_train and X_test have different numbers of features"
    )
    assert data.task == task, (
        f"Data.task is {data.task!r} but the dataset class declares task = {task!r}"
    )


def _shared_rows(data: Data) -> float:
    """Fraction of test rows (inputs and target) that also occur in the training split."""
    if data.X_test.shape[0] == 0:
        return 0.0
    train = {row.tobytes() for row in np.column_stack([data.X_train, data.y_train])}
    test = [row.tobytes() for row in np.column_stack([data.X_test, data.y_test])]
    return sum(row in train for row in test) / len(test)


def dataset_checks(
    name: str | type[Dataset],
    params: dict[str, Any] | None = None,
    seeds: tuple[int, int] = (0, 1),
) -> Iterator[tuple[str, Callable[[], None]]]:
    """Yield ``(check id, zero-argument check)`` pairs for a dataset (see :func:`check_dataset`).

    The data is loaded lazily by the first check; a
    :class:`~moebench.errors.DataUnavailable` from ``load`` propagates (the files are not on
    this machine).
    """
    cls = component_class("datasets", name)
    params = dict(params or {})
    cache: dict[int, Data] = {}

    def data(seed: int) -> Data:
        if seed not in cache:
            cache[seed] = _load(cls, params, seed)
        return cache[seed]

    def arrays() -> None:
        for seed in seeds:
            _check_arrays(data(seed), cls.task)

    def deterministic() -> None:
        again = _load(cls, params, seeds[0])
        for field_name in ("X_train", "y_train", "X_test", "y_test"):
            assert np.array_equal(getattr(data(seeds[0]), field_name),
                                  getattr(again, field_name)), (
                f"two loads with seed {seeds[0]} differ in {field_name}: derive every random "
                "choice from the seed (np.random.default_rng(seed)), never from global state"
            )

    def separated() -> None:
        d = data(seeds[0])
        assert d.X_test is not d.X_train, "X_test is the same array as X_train"
        shared = _shared_rows(d)
        assert shared <= MAX_SHARED_TEST_ROWS, (
            f"{shared:.0%} of the test rows also occur in the training split: split the rows "
            "into disjoint train and test sets (test metrics must measure generalisation)"
        )

    def model() -> None:
        d = data(seeds[0])
        assert d.model.name in plugins.components("models"), (
            f"Data.model names {d.model.name!r}, which is not a registered model family"
        )
        device = next(dev for dev in available_devices() if dev.name == "cpu")
        built = build_model(d, None, device, torch.float64)
        if d.truth is not None:
            shapes = built.shapes()
            assert set(d.truth) == set(shapes) and all(
                tuple(np.shape(d.truth[k])) == tuple(shapes[k]) for k in shapes), (
                f"Data.truth has shapes { {k: np.shape(v) for k, v in d.truth.items()} }, the "
                f"model {d.model.name!r} with {d.model.params} has {shapes}"
            )

    yield from (("check_dataset_arrays", arrays),
                ("check_dataset_deterministic", deterministic),
                ("check_dataset_train_test_separated", separated),
                ("check_dataset_model", model))


def check_dataset(
    name: str | type[Dataset],
    params: dict[str, Any] | None = None,
    seeds: tuple[int, int] = (0, 1),
) -> list[str]:
    """Run the conformance checks on a dataset plugin.

    Checks: ``load(seed)`` returns a :class:`~moebench.Data` with 2-d float inputs and 1-d
    targets of matching lengths (float for regression; integer labels ``0..C-1`` with
    ``meta['n_classes']`` for classification), no NaN or infinite value, the class's ``task``;
    the same seed gives the same arrays; the test rows are (mostly) not training rows; the
    proposed model family is registered and the truth, if any, has its shapes.

    Parameters
    ----------
    name
        A registered dataset's name, or a :class:`~moebench.Dataset` subclass.
    params
        The dataset's parameters (defaults otherwise).
    seeds
        Two seeds to load with.

    Returns
    -------
    list of str
        The checks that passed. The first failure raises ``AssertionError`` with what to
        change; :class:`~moebench.errors.DataUnavailable` propagates.
    """
    return run_checks(component_label(name), dataset_checks(name, params, seeds))
