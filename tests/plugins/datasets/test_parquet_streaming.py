"""EM and GD streamed from Parquet row groups (``moebench_plugins.datasets.arrays``)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from moebench import InitSpec
from moebench.em import GateOptions
from moebench_plugins.datasets.arrays import ParquetColumns, open_parquet
from moebench_plugins.models.kernels import RowChunks, chunked_nll_grad
from moebench_plugins.models.regression import RegressionMoE

N, D, ROW_GROUP = 1000, 4, 128
FEATURES = [f"x{j}" for j in range(D)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    y = X @ np.array([1.0, -0.5, 0.25, 2.0]) + 0.3 * rng.standard_normal(N)
    return X, y


@pytest.fixture(scope="module")
def path(data, tmp_path_factory):
    """``x0..x3`` and ``y`` in 8 row groups (the last one short); the target is not last."""
    X, y = data
    columns = {"x0": X[:, 0], "x1": X[:, 1], "y": y, "x2": X[:, 2], "x3": X[:, 3]}
    out = tmp_path_factory.mktemp("parquet") / "moe.parquet"
    pq.write_table(pa.table(columns), out, row_group_size=ROW_GROUP)
    assert pq.ParquetFile(out).metadata.num_row_groups == 8
    return out


@pytest.fixture
def reads(monkeypatch):
    """Counts ``read_row_group`` calls by ``(columns, row group)``."""
    calls: Counter = Counter()
    original = pq.ParquetFile.read_row_group

    def counting(self, i, columns=None, **kw):
        calls[(tuple(columns or ()), i)] += 1
        return original(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
    return calls


def test_shapes_and_default_features(path):
    X, y = open_parquet(path, "y")
    assert X.columns == ("x0", "x1", "x2", "x3")  # file order, target left out
    assert (X.shape, X.ndim, len(X), X.dtype) == ((N, D), 2, N, np.float64)
    assert (y.shape, y.ndim, len(y)) == ((N,), 1, N)
    X32, _ = open_parquet(path, "y", features=["x3", "x0"], dtype=np.float32)
    assert X32.shape == (N, 2) and X32[0:5].dtype == np.float32


def test_slices_equal_the_data_across_row_group_boundaries(path, data):
    Xd, yd = data
    X, y = open_parquet(path, "y")
    for s, e in [(0, N), (0, 1), (127, 129), (100, 400), (128, 256), (999, 1000), (990, 2000),
                 (500, 500), (-10, None), (None, 3), (300, 200)]:
        np.testing.assert_array_equal(X[s:e], Xd[s:e])
        np.testing.assert_array_equal(y[s:e], yd[s:e])
        assert isinstance(X[s:e], np.ndarray) and X[s:e].shape == Xd[s:e].shape
    for chunk in (1, 97, 128, 300, 2000):
        got = np.concatenate([X[s : s + chunk] for s in range(0, N, chunk)])
        np.testing.assert_array_equal(got, Xd)


def test_a_slice_reads_only_the_row_groups_it_overlaps(path, reads):
    X, _ = open_parquet(path, "y")
    X[130:140]
    X[200:250]
    assert reads == {(tuple(FEATURES), 1): 1}
    X[255:300]
    assert reads == {(tuple(FEATURES), 1): 1, (tuple(FEATURES), 2): 1}


@pytest.mark.parametrize("chunk_size", [97, 300])
def test_a_pass_reads_each_row_group_once(path, reads, chunk_size):
    X, y = open_parquet(path, "y")
    seen = sum(e - s for s, e, _ in RowChunks(X, y, chunk_size=chunk_size))
    assert seen == N
    expected = {(tuple(FEATURES), i): 1 for i in range(8)} | {(("y",), i): 1 for i in range(8)}
    assert reads == expected
    reads.clear()
    for _ in RowChunks(X, y, chunk_size=chunk_size):  # a second pass reads them once more
        pass
    assert reads == expected


def test_prefetch_reads_ahead_once_and_gives_the_same_rows(path, data, reads):
    """``prefetch=True``: a pass still reads each row group once (the next one in the
    background), and slices in any order return the data."""
    Xd, yd = data
    X, y = open_parquet(path, "y", prefetch=True)
    got = np.concatenate([X[s : s + 97] for s in range(0, N, 97)])
    np.testing.assert_array_equal(got, Xd)
    assert reads == {(tuple(FEATURES), i): 1 for i in range(8)}
    for s, e in [(900, 1000), (0, 5), (300, 700), (-3, None)]:  # backwards and jumps
        np.testing.assert_array_equal(X[s:e], Xd[s:e])
        np.testing.assert_array_equal(y[s:e], yd[s:e])


def test_em_streamed_from_parquet_equals_in_memory_em(path, data, reads):
    model = RegressionMoE(RegressionMoE.Params(k=3, noise="per_expert", chunk_size=97),
                          n_features=D)
    init = model.init_params(InitSpec(scale=2.0), torch.Generator().manual_seed(0))
    X, y = open_parquet(path, "y")
    Xt, yt = (torch.as_tensor(a) for a in data)
    gate = GateOptions(ridge=1e-4)
    streamed, in_memory = dict(init), dict(init)
    for _ in range(3):
        streamed, ext = model.em_step(X, y, streamed, gate, keep_responsibilities=False)
        in_memory, ref = model.em_step(Xt, yt, in_memory, gate)
        assert ext["nll"] == pytest.approx(ref["nll"], rel=1e-12)
    for key in streamed:
        torch.testing.assert_close(streamed[key], in_memory[key], rtol=1e-9, atol=1e-11)
    # every pass of an EM step reads each row group once
    counts = set(reads.values())
    assert len(counts) == 1 and len(reads) == 16


def test_gd_gradient_streamed_from_parquet(path, data):
    model = RegressionMoE(RegressionMoE.Params(k=3, noise="per_expert"), n_features=D)
    params = model.init_params(InitSpec(), torch.Generator().manual_seed(2))
    X, y = open_parquet(path, "y")
    nll, grads = chunked_nll_grad(model, params, X, y, chunk_size=200)
    ref, ref_grads = chunked_nll_grad(model, params, *(torch.as_tensor(a) for a in data),
                                      chunk_size=N)
    assert nll == pytest.approx(ref, rel=1e-12)
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], rtol=1e-10, atol=1e-12)


def test_only_row_slices_are_supported(path):
    X, _ = open_parquet(path, "y")
    for key in (3, (slice(0, 2), 0), slice(0, 10, 2), slice(None, None, -1), [1, 2]):
        with pytest.raises(TypeError, match=r"only row slices a\[start:stop\]"):
            X[key]


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        open_parquet(missing, "y")


def test_missing_and_misplaced_columns(path):
    with pytest.raises(ValueError, match=r"no column 'price'.*'x0'"):
        open_parquet(path, "price")
    with pytest.raises(ValueError, match=r"no column 'z'"):
        open_parquet(path, "y", features=["x0", "z"])
    with pytest.raises(ValueError, match=r"target 'y' is also listed in features"):
        open_parquet(path, "y", features=["x0", "y"])
    with pytest.raises(ValueError, match="floating-point"):
        ParquetColumns(path, "y", dtype=np.int64)


def test_bad_values(tmp_path):
    rows = np.arange(10, dtype=float)
    nan = rows.copy()
    nan[7] = np.nan
    table = pa.table({
        "y": rows,
        "x": rows,
        "count": np.arange(10),
        "flag": np.arange(10) % 2 == 0,
        "city": [f"c{i}" for i in range(10)],
        "nan": nan,
        "null": pa.array([0.0, 1.0, None, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
    })
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path, row_group_size=4)
    X, _ = open_parquet(path, "y", features=["x", "count", "flag"])  # ints and booleans are fine
    np.testing.assert_array_equal(X[0:3], [[0, 0, 1], [1, 1, 0], [2, 2, 1]])
    with pytest.raises(ValueError, match=r"column 'city' is not numeric \(type string\)"):
        open_parquet(path, "y")  # the default features include the string column
    with pytest.raises(ValueError, match=r"column 'null' has 1 null"):
        ParquetColumns(path, "null")  # reported by the row groups' statistics
    col = ParquetColumns(path, "nan")
    np.testing.assert_array_equal(col[0:4], rows[:4])  # row group 0 is clean
    with pytest.raises(ValueError, match=r"column 'nan' has a NaN or infinite value at row 7"):
        col[0:10]

    # without statistics, nulls are found when their row group is read
    bare = tmp_path / "bare.parquet"
    pq.write_table(table, bare, row_group_size=4, write_statistics=False)
    col = ParquetColumns(bare, ["x", "null"])
    with pytest.raises(ValueError, match=r"column 'null' has 1 null value\(s\) \(first at row 2\)"):
        col[0:5]


def test_a_pandas_index_is_not_a_default_feature(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0.0, 1.0, 0.0]}, index=[10, 20, 30])
    frame.to_parquet(tmp_path / "indexed.parquet")
    X, y = open_parquet(tmp_path / "indexed.parquet", "y")
    assert X.columns == ("a",)
    np.testing.assert_array_equal(X[:], [[1.0], [2.0], [3.0]])
