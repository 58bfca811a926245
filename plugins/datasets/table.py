"""Users' own data: a CSV, Parquet or NPZ file as a regression or classification dataset.

Suite example::

    datasets:
      - name: table
        params:
          path: data/houses.csv         # .csv, .parquet / .pq, or .npz
          target: price                 # the target column (or NPZ array)
          features: [area, rooms, age]  # optional; default: every other column
          task: regression              # or classification
          test_fraction: 0.2            # fixed random split (split_seed; 0: no test split), or
          # split_column: is_test       # a column marking test rows (test/train, true/false, 1/0)

An NPZ file holds either a 2-d array ``X`` (features, named ``x0``, ``x1``, ...) and the 1-d
target array named ``target``, or only 1-d arrays of equal length, read as columns. Features
must be numeric (``bool`` becomes 0/1); for classification the target may hold any labels,
which are mapped to ``0 .. C-1`` in sorted order (``meta["label_names"]``). NaN or infinite
values, a missing target column, a non-numeric feature, duplicate column names (pandas would
rename a second ``x`` to ``x.1``) or an empty file give a :class:`~moebench.errors.DataError`
naming the file and the column; so do degenerate training data (a single training row, only
constant features, a constant target, a single class: see :class:`moebench.Data`). A path that
does not exist gives :class:`~moebench.errors.DataUnavailable` "no such file: PATH".

Inputs (and a regression target) are standardised with training statistics
(``standardize=True``); ``meta["y_mean"]``/``meta["y_scale"]`` give errors in original units.
Default models: ``regression-moe`` ``{"k": 2, "intercept": True, "noise": "shared"}`` or
``logistic-moe`` ``{"k": 2, "intercept": True}``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Self

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from moebench import Data, Dataset, ModelSpec, Params, hookimpl
from moebench.datafiles import file_md5, fixed_split, standardize
from moebench.errors import DataError, DataUnavailable

__all__ = ["Table", "read_table"]

_TRUE = {"test", "true", "1", "yes"}
_FALSE = {"train", "false", "0", "no"}


def read_table(path: Path, fmt: str = "auto", target: str | None = None) -> pd.DataFrame:
    """Read ``path`` into a data frame (CSV via pandas, Parquet via pyarrow, NPZ via numpy).

    Column names must be unique: pandas' CSV reader would rename a repeated header ``x`` to
    ``x.1``, which can silently turn the target into a feature, so the raw header row is checked.
    A data row with more fields than the header is an error too (pandas would silently take the
    first column as the row index and shift the others).

    Raises
    ------
    DataUnavailable
        The file does not exist ("no such file: PATH").
    DataError
        The file is empty, cannot be parsed, or has duplicate column names.
    """
    if not path.is_file():
        if path.is_dir():
            raise DataError(f"table: {path} is a directory; `path` must name a .csv, .parquet "
                            "or .npz file")
        raise DataUnavailable(f"table: no such file: {path} (the dataset's `path` parameter; "
                              f"a relative path is taken from {Path.cwd()})")
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet",
               ".pq": "parquet", ".npz": "npz"}.get(suffix, "")
        if not fmt:
            raise DataError(f"{path}: unknown file type {suffix!r}; use .csv, .parquet or .npz, "
                            "or set format")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        if fmt == "csv":
            frame = _read_csv(path)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            _check_unique(path, [str(c) for c in pq.read_schema(path).names])
            frame = pd.read_parquet(path, engine="pyarrow")
        else:
            frame = _read_npz(path, target)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (ValueError, OSError) as exc:  # ParserError, ArrowInvalid, BadZipFile, ...
        raise DataError(f"{path}: cannot read it as {fmt} ({exc})") from None
    _check_unique(path, [str(c) for c in frame.columns])
    frame.columns = [str(c) for c in frame.columns]
    if frame.shape[0] == 0:
        raise DataError(f"{path}: the file has no data rows (columns: "
                        f"{', '.join(frame.columns) or 'none'})")
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV/TSV file with its header row checked for duplicates before pandas renames them."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    _check_unique(path, [str(c) for c in header.iloc[0].tolist()] if len(header) else [])
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(path, sep=sep, index_col=False)
        except pd.errors.ParserWarning:
            raise DataError(f"{path}: a data row has more fields than the header row "
                            f"({len(header.columns)} column names); fix the row or the "
                            "header") from None


def _check_unique(path: Path, names: list[str]) -> None:
    """DataError naming the column names that occur more than once."""
    counts = Counter(names)
    dupes = [name for name, c in counts.items() if c > 1]
    if dupes:
        shown = ", ".join(f"{name!r} ({counts[name]} times)" for name in dupes)
        raise DataError(f"{path}: duplicate column name(s) {shown}; every column needs a "
                        "unique name (a CSV reader would rename the copies, e.g. 'x' to 'x.1', "
                        "so the target or a feature could silently be the wrong column)")


def _read_npz(path: Path, target: str | None) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if not arrays:
        raise DataError(f"{path}: the file is empty (no arrays)")
    if "X" in arrays and arrays["X"].ndim == 2:
        X = arrays.pop("X")
        frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])])
        for name, a in arrays.items():
            if name in frame.columns:
                raise DataError(f"{path}: array {name!r} has the name of a column of X "
                                f"(x0 .. x{X.shape[1] - 1}); rename it")
            if a.ndim == 1 and a.shape[0] == X.shape[0]:
                frame[name] = a
            elif name == target:
                raise DataError(f"{path}: array {name!r} has shape {a.shape}; the target must "
                                f"be 1-d with {X.shape[0]} entries like the rows of X")
        return frame
    shapes = {k: a.shape for k, a in arrays.items()}
    lengths = {a.shape[0] for a in arrays.values() if a.ndim == 1}
    if any(a.ndim != 1 for a in arrays.values()) or len(lengths) != 1:
        raise DataError(f"{path}: an NPZ table needs a 2-d array 'X' or 1-d arrays of equal "
                        f"length; found {shapes}")
    return pd.DataFrame(arrays)


def _finite_column(values: pd.Series, path: Path, role: str) -> np.ndarray:
    """The column as float, or a DataError naming it (non-numeric, NaN or infinite)."""
    name = values.name
    if pd.api.types.is_bool_dtype(values):
        values = values.astype(float)
    if not pd.api.types.is_numeric_dtype(values):
        converted = pd.to_numeric(values, errors="coerce")
        bad = values[converted.isna() & values.notna()]
        if len(bad):
            raise DataError(f"{path}: {role} column {name!r} is not numeric (dtype "
                            f"{values.dtype}; e.g. {bad.iloc[0]!r} at row index {bad.index[0]})")
        values = converted
    a = values.to_numpy(dtype=float)
    bad_rows = np.flatnonzero(~np.isfinite(a))
    if bad_rows.size:
        raise DataError(f"{path}: {role} column {name!r} has {bad_rows.size} NaN or infinite "
                        f"value(s) (first at row index {bad_rows[0]}); clean or drop them first")
    return a


class Table(Dataset):
    """A user's CSV, Parquet or NPZ file (see the module docstring)."""

    name = "table"
    summary = "your own CSV, Parquet or NPZ file: target column, optional features, fixed split"
    task = "regression"

    class Params(Params):
        """Parameters of the table loader."""

        path: str = Field(description="the .csv, .parquet or .npz file")
        target: str = Field(description="target column (or NPZ array) name")
        features: list[str] | None = Field(
            None, min_length=1, description="feature columns (default: all other columns)"
        )
        task: Literal["regression", "classification"] = Field(
            "regression", description="regression (real target) or classification (labels)"
        )
        test_fraction: float = Field(
            0.2, ge=0, lt=1, description="fraction of rows in the fixed random test split; 0 "
            "trains on every row (no test split: test metrics are then absent, NaN)"
        )
        split_seed: int = Field(0, ge=0, description="seed of the fixed random split")
        split_column: str | None = Field(
            None, description="column marking test rows (test/train, true/false, 1/0) instead "
            "of a random split"
        )
        standardize: bool = Field(
            True, description="standardise inputs (and a regression target) with training "
            "statistics"
        )
        format: Literal["auto", "csv", "parquet", "npz"] = Field(
            "auto", description="file format (auto: from the file extension)"
        )

        @model_validator(mode="after")
        def _check_columns(self) -> Self:
            used = [self.target] + ([self.split_column] if self.split_column else [])
            clash = [c for c in (self.features or []) if c in used]
            if clash:
                raise ValueError(f"feature(s) {', '.join(clash)} are also the target or the "
                                 "split column")
            return self

    def load(self, seed: int) -> Data:
        """Read, check, split and standardise the table (``seed`` is not used)."""
        p = self.params
        path = Path(p.path).expanduser()
        frame = read_table(path, p.format, p.target)
        columns = list(frame.columns)
        available = ", ".join(columns)
        if p.target not in columns:
            raise DataError(f"{path}: no target column {p.target!r}; available columns: "
                            f"{available}")
        if p.split_column is not None and p.split_column not in columns:
            raise DataError(f"{path}: no split column {p.split_column!r}; available columns: "
                            f"{available}")
        features = p.features or [c for c in columns if c not in (p.target, p.split_column)]
        missing = [c for c in features if c not in columns]
        if missing:
            raise DataError(f"{path}: no feature column(s) {', '.join(map(repr, missing))}; "
                            f"available columns: {available}")
        if not features:
            raise DataError(f"{path}: no feature columns besides the target {p.target!r}")
        X = np.column_stack([_finite_column(frame[c], path, "feature") for c in features])
        meta: dict = {}
        if p.task == "regression":
            y = _finite_column(frame[p.target], path, "target")
        else:
            raw = frame[p.target]
            if raw.isna().any():
                raise DataError(f"{path}: target column {p.target!r} has {int(raw.isna().sum())} "
                                f"missing label(s) (first at row index {raw.index[raw.isna()][0]})")
            labels = raw.to_numpy()
            if labels.dtype == object:  # mixed types (Parquet, NPZ) do not sort: compare text
                labels = labels.astype(str)
            classes, y = np.unique(labels, return_inverse=True)
            if classes.size < 2:
                raise DataError(f"{path}: target column {p.target!r} has a single class "
                                f"{classes[0]!r}")
            y = y.astype(np.int64)
            meta.update(n_classes=int(classes.size), label_names=[str(c) for c in classes])
        if p.split_column is not None:
            test_mask = _split_mask(frame[p.split_column], path)
            train, test = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
            if train.size == 0 or test.size == 0:
                raise DataError(f"{path}: split column {p.split_column!r} leaves the "
                                f"{'training' if train.size == 0 else 'test'} split empty")
            split = f"column {p.split_column!r}"
        elif p.test_fraction == 0:
            train, test = np.arange(X.shape[0]), np.arange(0)
            split = ("none (test_fraction=0): every row trains; test metrics are absent (NaN) "
                     "and a leaderboard ranked by one has no values")
        else:
            train, test = fixed_split(X.shape[0], p.test_fraction, p.split_seed)
            split = f"random, test_fraction={p.test_fraction}, split_seed={p.split_seed}"
        regression = p.task == "regression"
        s = standardize(X[train], X[test], y[train].astype(float), y[test].astype(float),
                        inputs=p.standardize, target=p.standardize and regression)
        if regression:
            y_train, y_test = s.y_train, s.y_test
            model = ModelSpec("regression-moe", {"k": 2, "intercept": True, "noise": "shared"})
            meta.update(y_mean=s.y_mean, y_scale=s.y_scale)
        else:
            y_train, y_test = y[train], y[test]
            model = ModelSpec("logistic-moe", {"k": 2, "intercept": True})
        meta.update({
            "n": int(X.shape[0]),
            "n_train": int(train.size),
            "n_test": int(test.size),
            "d": len(features),
            "task": p.task,
            "source": f"user table {path}",
            "citation": "",
            "feature_names": features,
            "target_name": p.target,
            "split": split,
            "standardized": p.standardize,
            "x_mean": s.x_mean.tolist(),
            "x_scale": s.x_scale.tolist(),
            "md5": file_md5(path),
        })
        return Data(X_train=s.X_train, y_train=y_train, X_test=s.X_test, y_test=y_test,
                    task=p.task, model=model, truth=None, meta=meta)


def _split_mask(column: pd.Series, path: Path) -> np.ndarray:
    """Test-row mask from a split column: test/train, true/false, yes/no or 1/0."""
    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=bool)
    text = column.astype(str).str.strip().str.lower()
    text = text.where(~text.isin({"1.0"}), "1").where(~text.isin({"0.0"}), "0")
    bad = column[~text.isin(_TRUE | _FALSE)]
    if len(bad):
        raise DataError(f"{path}: split column {column.name!r} has value {bad.iloc[0]!r} at "
                        f"row index {bad.index[0]}; use test/train, true/false, yes/no or 1/0")
    return text.isin(_TRUE).to_numpy()


@hookimpl
def register_datasets(register: Callable[[type], None]) -> None:
    """Register :class:`Table`."""
    register(Table)
