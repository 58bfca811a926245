"""open_npz_rows: the rows of an uncompressed NPZ read slice by slice from the file (no memory
map, so a pass does not leave the file resident in the process)."""

from __future__ import annotations

import numpy as np
import pytest

from moebench_plugins.datasets.arrays import NpyRows, open_npz_memmap, open_npz_rows


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((1000, 3)), rng.standard_normal(1000)
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=y)
    return path, X, y


def test_slices_equal_the_arrays_and_the_memory_map(npz):
    path, X, y = npz
    rows, mapped = open_npz_rows(path), open_npz_memmap(path)
    assert rows["X"].shape == (1000, 3) and rows["y"].ndim == 1 and len(rows["y"]) == 1000
    for s, e in [(0, 1000), (0, 1), (997, None), (-5, None), (400, 400), (300, 200), (None, 7)]:
        np.testing.assert_array_equal(rows["X"][s:e], X[s:e])
        np.testing.assert_array_equal(rows["y"][s:e], mapped["y"][s:e])


def test_only_row_slices_and_whole_files(npz, tmp_path):
    path, _, _ = npz
    rows = open_npz_rows(path)
    with pytest.raises(TypeError, match="only row slices"):
        rows["X"][::2]
    with pytest.raises(TypeError, match="only row slices"):
        rows["X"][3]
    truncated = NpyRows(path, offset=0, shape=(10**6, 3), dtype=np.float64)
    with pytest.raises(ValueError, match="truncated"):
        truncated[999_000:1_000_000]
    with pytest.raises(ValueError, match="Fortran-order"):
        NpyRows(path, offset=0, shape=(10, 3), dtype=np.float64, fortran=True)
    compressed = tmp_path / "c.npz"
    np.savez_compressed(compressed, X=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="savez_compressed"):
        open_npz_rows(compressed)
