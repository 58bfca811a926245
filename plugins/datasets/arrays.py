"""Out-of-core arrays for streaming EM and GD: Parquet columns and memory-mapped NPZ members.

The chunked kernels (:class:`~moebench_plugins.models.kernels.RowChunks`, and through it
:meth:`RegressionMoE.em_step <moebench_plugins.models.regression.RegressionMoE.em_step>`, as well
as :func:`~moebench_plugins.models.kernels.chunked_nll_grad`) read ``X`` and ``y`` only through
``ndim``, ``shape`` and row slices ``a[s:e]`` taken in increasing order of ``s``. A
:class:`ParquetColumns` offers exactly that over one or several columns of a Parquet file: a slice
reads only the row groups that overlap it, and the last row group read stays cached, so a
chunk-by-chunk pass reads every row group once and memory stays that of one row group (plus the
chunk being returned), whatever the file's size.

Examples
--------
>>> X, y = open_parquet("train.parquet", target="y")          # doctest: +SKIP
>>> for _ in range(50):                                          # doctest: +SKIP
...     params, info = model.em_step(X, y, params, GateOptions(), keep_responsibilities=False)

:func:`open_npz_memmap` is the NPZ counterpart: the members of an uncompressed ``.npz`` file as
read-only memory maps.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.lib import format as npy_format

__all__ = ["NpyRows", "ParquetColumns", "open_npz_memmap", "open_npz_rows", "open_parquet"]


def _is_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


class ParquetColumns:
    """Read-only, array-like view of numeric columns of a Parquet file, read row group by row group.

    Parameters
    ----------
    path
        The Parquet file.
    columns
        One column name (the view is 1-d, shape ``(n,)``) or a sequence of names (2-d, shape
        ``(n, p)``, columns in the given order).
    dtype
        Floating-point dtype of the arrays returned by slicing (default float64). Integer and
        boolean columns are converted to it.

    prefetch
        Read the next row group in a background thread while the current one is consumed
        (a sequential pass: pyarrow decodes without the GIL, so reading overlaps the
        computation; one more row group in memory). Default ``False``: a slice reads only the
        row groups it overlaps.

    Attributes
    ----------
    path : str
        The file.
    columns : tuple of str
        The columns, in the order of the view's second axis.
    shape : tuple of int
        ``(n,)`` or ``(n, p)``.
    ndim : int
        1 or 2.
    dtype : numpy.dtype
        The dtype of the slices.
    n_row_groups : int
        Row groups of the file.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A column is missing or not numeric, its metadata reports nulls, or ``dtype`` is not a
        floating-point type.

    Notes
    -----
    Only ``a[start:stop]`` with step 1 is supported (``start``/``stop`` may be omitted or
    negative, as for numpy arrays); it returns a new ``(stop - start,)`` or
    ``(stop - start, p)`` numpy array. A slice reads the row groups that overlap it
    (:meth:`pyarrow.parquet.ParquetFile.read_row_group` restricted to :attr:`columns`); the last
    row group read is kept, so a pass over increasing, contiguous slices (any chunk size) reads
    each row group exactly once. Every row group read is checked: nulls, NaN and infinite values
    raise :class:`ValueError` naming the column and the first offending row.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: str | Sequence[str],
        *,
        dtype: Any = np.float64,
        prefetch: bool = False,
    ):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no such Parquet file: {self.path}")
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise ValueError(f"dtype must be a floating-point type (e.g. np.float64), got "
                             f"{self.dtype}")
        single = isinstance(columns, str)
        names = (columns,) if single else tuple(columns)
        if not names:
            raise ValueError(f"{self.path}: no columns given; name at least one column")
        bad = [c for c in names if not isinstance(c, str)]
        if bad:
            raise TypeError(f"column names must be strings, got {bad[0]!r}")
        self.columns = names
        self._file = pq.ParquetFile(self.path)
        schema = self._file.schema_arrow
        missing = [c for c in names if schema.get_field_index(c) < 0]
        if missing:
            raise ValueError(
                f"{self.path}: no column {', '.join(map(repr, missing))}; the file has "
                f"{', '.join(map(repr, schema.names))}. Pass existing column names"
            )
        for c in names:
            kind = schema.field(c).type
            if not _is_numeric(kind):
                raise ValueError(
                    f"{self.path}: column {c!r} is not numeric (type {kind}); convert it to "
                    "numbers (e.g. encode categories) or leave it out of the columns"
                )
        meta = self._file.metadata
        self.n_row_groups = meta.num_row_groups
        sizes = [meta.row_group(i).num_rows for i in range(self.n_row_groups)]
        #: ``_starts[i]`` is the first row of row group ``i``; ``_starts[-1]`` the row count.
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._check_null_counts()
        n = int(self._starts[-1])
        self.shape: tuple[int, ...] = (n,) if single else (n, len(names))
        self.ndim = len(self.shape)
        self._read = list(dict.fromkeys(names))  # the distinct columns, read in one call
        self._cached: tuple[int, np.ndarray] | None = None
        self._prefetch = ThreadPoolExecutor(max_workers=1) if prefetch else None
        self._pending: tuple[int, Future[np.ndarray]] | None = None

    def _check_null_counts(self) -> None:
        """Fail early on nulls that the row groups' statistics already report."""
        meta = self._file.metadata
        if self.n_row_groups == 0:
            return
        first = meta.row_group(0)
        leaves = [j for j in range(first.num_columns)
                  if first.column(j).path_in_schema in self.columns]
        for i in range(self.n_row_groups):
            rg = meta.row_group(i)
            for j in leaves:
                col = rg.column(j)
                stats = col.statistics
                if stats is not None and stats.has_null_count and stats.null_count > 0:
                    raise self._null_error(col.path_in_schema, stats.null_count, None)

    def _null_error(self, column: str, count: int, first: int | None) -> ValueError:
        where = f" (first at row {first})" if first is not None else ""
        return ValueError(
            f"{self.path}: column {column!r} has {count} null value(s){where}; fill or drop "
            "them before streaming the file"
        )

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        cols = self.columns[0] if self.ndim == 1 else list(self.columns)
        return (f"ParquetColumns({self.path!r}, {cols!r}, shape={self.shape}, "
                f"dtype={self.dtype}, row_groups={self.n_row_groups})")

    def _row_group(self, i: int) -> np.ndarray:
        """Row group ``i`` as a validated ``(rows, p)`` array (cached: the last one read); with
        ``prefetch``, row group ``i + 1`` is then read in the background."""
        if self._cached is not None and self._cached[0] == i:
            return self._cached[1]
        self._cached = None  # release the previous row group before reading the next one
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == i:
            out = pending[1].result()
        else:
            if pending is not None:
                pending[1].cancel()
                wait([pending[1]])  # one reader of the file at a time
            out = self._load(i)
        self._cached = (i, out)
        if self._prefetch is not None and i + 1 < self.n_row_groups:
            self._pending = (i + 1, self._prefetch.submit(self._load, i + 1))
        return out

    def _load(self, i: int) -> np.ndarray:
        """Read and validate row group ``i``."""
        table = self._file.read_row_group(i, columns=self._read)
        start = int(self._starts[i])
        out = np.empty((table.num_rows, len(self.columns)), dtype=self.dtype)
        for j, name in enumerate(self.columns):
            col = table.column(name)
            if col.null_count:
                nulls = col.is_null().to_numpy(zero_copy_only=False)
                raise self._null_error(name, col.null_count, start + int(np.argmax(nulls)))
            out[:, j] = col.to_numpy()
            bad = np.flatnonzero(~np.isfinite(out[:, j]))
            if bad.size:
                raise ValueError(
                    f"{self.path}: column {name!r} has a NaN or infinite value at row "
                    f"{start + int(bad[0])} (row group {i}); clean or drop those rows before "
                    "streaming the file"
                )
        return out

    def __getitem__(self, key: slice) -> np.ndarray:
        """The rows ``key.start:key.stop`` as a new numpy array (row slices with step 1 only)."""
        if not isinstance(key, slice):
            raise TypeError(
                f"ParquetColumns supports only row slices a[start:stop] (step 1), got "
                f"{type(key).__name__} {key!r}; read chunks of rows by slicing"
            )
        n = self.shape[0]
        start, stop, step = key.indices(n)
        if step != 1:
            raise TypeError(f"ParquetColumns supports only row slices a[start:stop] with step 1, "
                            f"got step {key.step}")
        stop = max(start, stop)
        out = np.empty((stop - start, len(self.columns)), dtype=self.dtype)
        if stop > start:
            first = int(np.searchsorted(self._starts, start, side="right")) - 1
            last = int(np.searchsorted(self._starts, stop, side="left")) - 1
            for i in range(first, last + 1):
                g0, g1 = int(self._starts[i]), int(self._starts[i + 1])
                lo, hi = max(start, g0), min(stop, g1)
                out[lo - start : hi - start] = self._row_group(i)[lo - g0 : hi - g0]
        return out[:, 0] if self.ndim == 1 else out


def open_parquet(
    path: str | os.PathLike[str],
    target: str,
    features: Sequence[str] | None = None,
    dtype: Any = np.float64,
    prefetch: bool = False,
) -> tuple[ParquetColumns, ParquetColumns]:
    """Inputs ``X`` and targets ``y`` of a Parquet file as streamable :class:`ParquetColumns`.

    Parameters
    ----------
    path
        The Parquet file.
    target
        The target column (``y``, shape ``(n,)``).
    features
        The input columns (``X``, shape ``(n, d)``, in this order). Default: every column except
        ``target``, in file order (columns that only hold a pandas index are left out).
    dtype
        Floating-point dtype of the slices (default float64).
    prefetch
        Read the next row group in the background (see :class:`ParquetColumns`).

    Returns
    -------
    tuple
        ``(X, y)``, to pass to :meth:`RegressionMoE.em_step
        <moebench_plugins.models.regression.RegressionMoE.em_step>` with
        ``keep_responsibilities=False`` or to
        :func:`~moebench_plugins.models.kernels.chunked_nll_grad`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A column is missing or not numeric, holds nulls, or ``target`` is among ``features``
        (see :class:`ParquetColumns`); NaN, infinite and null values are reported when the
        slice that reads them is taken.
    """
    y = ParquetColumns(path, target, dtype=dtype, prefetch=prefetch)
    if features is None:
        schema = y._file.schema_arrow
        index = set()
        pandas_meta = schema.pandas_metadata or {}
        for c in pandas_meta.get("index_columns", []):
            if isinstance(c, str):
                index.add(c)
        features = [c for c in schema.names if c != target and c not in index]
        if not features:
            raise ValueError(f"{y.path}: no feature columns besides the target {target!r}")
    elif isinstance(features, str):
        raise TypeError(f"features must be a sequence of column names, got the string "
                        f"{features!r}; use [{features!r}]")
    elif target in features:
        raise ValueError(f"{y.path}: the target {target!r} is also listed in features; "
                         "leave it out of features")
    X = ParquetColumns(path, list(features), dtype=dtype, prefetch=prefetch)
    return X, y


def open_npz_memmap(path: str | os.PathLike[str]) -> dict[str, np.memmap]:
    """Memory-map every array of an uncompressed ``.npz`` file (``np.savez``), read-only.

    ``np.load(path, mmap_mode="r")`` loads the members of an NPZ into memory; an uncompressed
    member is a plain ``.npy`` stored at a fixed offset of the zip file, so it can be mapped
    directly and streamed through :class:`~moebench_plugins.models.kernels.RowChunks` without
    reading it all.

    Parameters
    ----------
    path
        The ``.npz`` file.

    Returns
    -------
    dict
        ``np.memmap`` arrays by member name (without ``.npy``).

    Raises
    ------
    ValueError
        A member is compressed (``np.savez_compressed``) and cannot be mapped.
    """
    return {
        name: np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                        order="F" if fortran else "C")
        for name, offset, shape, fortran, dtype in _npz_members(path)
    }


def open_npz_rows(path: str | os.PathLike[str]) -> dict[str, NpyRows]:
    """The arrays of an uncompressed ``.npz`` file as :class:`NpyRows`: row slices read from
    the file, without mapping it.

    A pass over a memory map leaves the pages it touched resident in the process (they count in
    its RSS until the kernel reclaims them); reading the slices instead keeps the process at the
    size of one slice. Same members and errors as :func:`open_npz_memmap`.

    Parameters
    ----------
    path
        The ``.npz`` file.

    Returns
    -------
    dict
        :class:`NpyRows` by member name (without ``.npy``).
    """
    return {name: NpyRows(path, offset, shape, dtype, fortran)
            for name, offset, shape, fortran, dtype in _npz_members(path)}


class NpyRows:
    """Read-only, array-like rows of a ``.npy`` array stored at ``offset`` of a file: ``shape``,
    ``ndim``, ``dtype`` and row slices ``a[start:stop]`` (step 1), each read from the file into a
    new array.

    Parameters
    ----------
    path
        The file.
    offset
        Byte offset of the array's data.
    shape, dtype
        The array's shape and dtype.
    fortran
        Whether the array is stored in Fortran order (rows are then not contiguous: refused).
    """

    def __init__(self, path: str | os.PathLike[str], offset: int, shape: tuple[int, ...],
                 dtype: Any, fortran: bool = False) -> None:
        self.path = os.fspath(path)
        if fortran and len(shape) > 1:
            raise ValueError(f"{self.path!r}: a Fortran-order array has no contiguous rows; "
                             "save it in C order (np.ascontiguousarray) or use open_npz_memmap")
        self.offset, self.shape, self.dtype = int(offset), tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self._row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"NpyRows({self.path!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: slice) -> np.ndarray:
        """Rows ``key.start:key.stop`` as a new array (row slices with step 1 only)."""
        if not isinstance(key, slice) or key.indices(self.shape[0])[2] != 1:
            raise TypeError(f"NpyRows supports only row slices a[start:stop] (step 1), got "
                            f"{key!r}; read chunks of rows by slicing")
        start, stop, _ = key.indices(self.shape[0])
        stop = max(start, stop)
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.offset + start * self._row_bytes)
            got = 0
            while got < len(view):
                chunk = fh.readinto(view[got:])
                if not chunk:
                    raise ValueError(f"{self.path!r}: the file ends before row {stop}; it is "
                                     "truncated")
                got += chunk
        return out


def _npz_members(path: str | os.PathLike[str]
                 ) -> list[tuple[str, int, tuple[int, ...], bool, np.dtype]]:
    """``(name, data offset, shape, fortran order, dtype)`` of each member of an uncompressed
    NPZ file."""
    out = []
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"{os.fspath(path)!r}: member {info.filename!r} is compressed; save with "
                    "np.savez (not savez_compressed) to stream it"
                )
            fh.seek(info.header_offset)
            local = fh.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            out.append((name, fh.tell(), shape, fortran, dtype))
    return out
