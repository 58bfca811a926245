"""The `table` dataset: users' CSV, Parquet and NPZ files, and its error messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moebench.errors import DataError, DataUnavailable
from moebench_plugins.datasets.table import Table


def load(**params):
    return Table(Table.Params(**params)).load(0)


def frame(n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "a": rng.normal(3, 2, n),
        "b": rng.integers(0, 5, n),
        "flag": rng.random(n) < 0.5,
        "price": rng.normal(100, 10, n),
        "kind": rng.choice(["cat", "dog", "eel"], n),
        "is_test": np.arange(n) % 5 == 0,
    })


def test_csv_regression_with_random_split(tmp_path):
    path = tmp_path / "houses.csv"
    frame().drop(columns=["kind"]).to_csv(path, index=False)
    data = load(path=str(path), target="price", split_column=None, features=["a", "b", "flag"])
    assert data.X_train.shape == (40, 3) and data.X_test.shape == (10, 3)
    assert np.allclose(data.X_train.mean(axis=0), 0) and np.allclose(data.X_train.std(axis=0), 1)
    assert abs(data.y_train.mean()) < 1e-12
    m = data.meta
    assert m["feature_names"] == ["a", "b", "flag"] and m["target_name"] == "price"
    assert m["y_scale"] > 1 and len(m["md5"]) == 32
    assert data.model.name == "regression-moe"
    # default features: every column but the target (and the split column)
    everything = load(path=str(path), target="price", split_column="is_test")
    assert everything.meta["feature_names"] == ["a", "b", "flag"]
    assert everything.X_test.shape == (10, 3)
    # the split is fixed
    again = Table(Table.Params(path=str(path), target="price")).load(42)
    first = load(path=str(path), target="price")
    assert np.array_equal(first.X_test, again.X_test)


def test_parquet_classification_with_string_labels(tmp_path):
    path = tmp_path / "pets.parquet"
    frame().to_parquet(path)
    data = load(path=str(path), target="kind", task="classification", features=["a", "b"],
                split_column="is_test")
    assert data.task == "classification" and data.y_train.dtype == np.int64
    assert data.meta["label_names"] == ["cat", "dog", "eel"] and data.meta["n_classes"] == 3
    assert set(np.unique(data.y_train)) <= {0, 1, 2}
    assert data.X_test.shape == (10, 2)
    assert data.model.name == "logistic-moe"


def test_npz_with_x_and_y_or_columns(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 4)), rng.normal(size=30)
    np.savez(tmp_path / "xy.npz", X=X, y=y)
    data = load(path=str(tmp_path / "xy.npz"), target="y", standardize=False)
    assert data.meta["feature_names"] == ["x0", "x1", "x2", "x3"]
    assert np.allclose(np.sort(np.concatenate([data.y_train, data.y_test])), np.sort(y))
    np.savez(tmp_path / "cols.npz", u=X[:, 0], v=X[:, 1], target=y)
    cols = load(path=str(tmp_path / "cols.npz"), target="target")
    assert cols.meta["feature_names"] == ["u", "v"] and cols.X_train.shape == (24, 2)
    np.savez(tmp_path / "bad.npz", X=X, y=y[:10])
    with pytest.raises(DataError, match="bad.npz.*'y'"):
        load(path=str(tmp_path / "bad.npz"), target="y")


def test_nan_or_infinite_values_name_file_and_column(tmp_path):
    df = frame().drop(columns=["kind"])
    df.loc[7, "a"] = np.nan
    path = tmp_path / "nan.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load(path=str(path), target="price")
    msg = str(err.value)
    assert str(path) in msg and "feature column 'a'" in msg and "row index 7" in msg
    df = frame().drop(columns=["kind"])
    df.loc[3, "price"] = np.inf
    df.to_parquet(tmp_path / "inf.parquet")
    with pytest.raises(DataError, match=r"inf\.parquet: target column 'price' has 1 NaN or inf"):
        load(path=str(tmp_path / "inf.parquet"), target="price")


def test_missing_target_column_lists_available_columns(tmp_path):
    path = tmp_path / "houses.csv"
    frame().to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load(path=str(path), target="cost")
    msg = str(err.value)
    assert str(path) in msg and "'cost'" in msg
    assert "available columns: a, b, flag, price, kind, is_test" in msg
    with pytest.raises(DataError, match="no feature column.*'size'"):
        load(path=str(path), target="price", features=["a", "size"])


def test_non_numeric_feature_is_named(tmp_path):
    path = tmp_path / "houses.csv"
    frame().to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load(path=str(path), target="price", features=["a", "kind"])
    assert str(path) in str(err.value) and "feature column 'kind' is not numeric" in str(err.value)


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        load(path=str(empty), target="y")
    header = tmp_path / "header.csv"
    header.write_text("x,y\n")
    with pytest.raises(DataError, match="header.csv: the file has no data rows"):
        load(path=str(header), target="y")
    np.savez(tmp_path / "none.npz")
    with pytest.raises(DataError, match="none.npz: the file is empty"):
        load(path=str(tmp_path / "none.npz"), target="y")


def test_missing_file_bad_split_column_and_unknown_format(tmp_path):
    with pytest.raises(DataUnavailable, match="no such file"):
        load(path=str(tmp_path / "absent.csv"), target="y")
    df = frame().drop(columns=["kind"])
    df["is_test"] = df["is_test"].map({True: "test", False: "maybe"})
    df.to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(DataError, match="split column 'is_test' has value 'maybe'"):
        load(path=str(tmp_path / "split.csv"), target="price", split_column="is_test")
    (tmp_path / "data.xyz").write_text("1")
    with pytest.raises(DataError, match="unknown file type"):
        load(path=str(tmp_path / "data.xyz"), target="y")
    with pytest.raises(ValueError, match="also the target"):
        Table.Params(path="x.csv", target="y", features=["y"])
