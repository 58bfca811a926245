"""Hostile and degenerate data: every failure is a DataError/DataUnavailable that says what to do.

* degenerate training data (one row, all-constant inputs, constant target, one class, fewer rows
  than experts), for any array contents (property tests on :class:`moebench.Data`);
* the ``table`` loader on random small CSV tables: duplicate or empty header names, NaN / inf /
  empty cells, text, ragged rows, too few rows, a missing target (hypothesis);
* corrupt compressed files (truncated, bit-flipped, emptied ``.gz``, ``.xlsx``, ``.xls``)
  copied from ``../shared/data`` into ``tmp_path``: "checksum mismatch for FILE, run
  `moebench data fetch NAME --force`", never a decompressor's exception;
* modified split index files of the UCI 20-split benchmark;
* explicit paths that do not exist: "no such file: PATH".
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moebench import Data, ModelSpec
from moebench.datafiles import check_files
from moebench.dataset import check_fit_possible
from moebench.errors import DataError, DataUnavailable
from moebench_plugins.datasets import fashion_mnist, uci
from moebench_plugins.datasets.table import Table

SHARED = Path(os.environ["MOEBENCH_DATA"]) if os.environ.get("MOEBENCH_DATA") else None
needs_data = pytest.mark.skipif(SHARED is None or not (SHARED / "MANIFEST.tsv").is_file(),
                                reason="needs ../shared/data (set MOEBENCH_DATA)")
SPEC = ModelSpec("regression-moe", {"k": 2})
PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=200,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache and no downloads; MOEBENCH_DATA stays as conftest set it."""
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOEBENCH_OFFLINE", "1")


def make(X, y, task="regression", X_test=None, y_test=None) -> Data:
    X, y = np.asarray(X, dtype=float), np.asarray(y)
    X_test = X[:1] if X_test is None else np.asarray(X_test, dtype=float)
    y_test = y[:1] if y_test is None else np.asarray(y_test)
    return Data(X, y, X_test, y_test, task, SPEC)


# ------------------------------------------------------------------------ degenerate data


def _degenerate(X: np.ndarray, y: np.ndarray, task: str) -> str | None:
    """Which degenerate case the training data falls into (the specification), or None."""
    if X.shape[0] < 2:
        return "single row"
    if np.all(X == X[0]):
        return "constant"
    if np.unique(y).size < 2:
        return "constant" if task == "regression" else "single class"
    return None


@PROPERTY
@given(
    n=st.integers(1, 6), d=st.integers(1, 3), task=st.sampled_from(["regression",
                                                                    "classification"]),
    data=st.data(),
)
def test_degenerate_training_data_is_a_data_error_with_a_remedy(n, d, task, data):
    """For any small training set: DataError exactly when it is degenerate, saying what to do."""
    cells = st.sampled_from([0.0, 1.0, -2.5])  # few values, so that constants are frequent
    X = np.array(data.draw(st.lists(st.lists(cells, min_size=d, max_size=d), min_size=n,
                                    max_size=n)))
    if task == "regression":
        y = np.array(data.draw(st.lists(cells, min_size=n, max_size=n)))
    else:
        y = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
                     dtype=np.int64)
    expected = _degenerate(X, y, task)
    if expected is None:
        built = make(X, y, task)
        assert built.X_train.shape == (n, d)
        return
    with pytest.raises(DataError) as err:
        make(X, y, task)
    msg = str(err.value)
    assert expected in msg, msg
    if expected == "single row":  # the end of each case's message: what to do about it
        remedy = ("use more training rows (check n_train / test_fraction / the split column, or a "
                  "larger file)")
    elif np.all(X == X[0]):
        remedy = ("check the feature columns, the file or the subsample (a constant column next to "
                  "varying ones is fine)")
    elif task == "regression":
        remedy = "check the target column (or its standardisation), the split, or use more rows"
    else:
        remedy = "check the target column, the split or the subsample (use more training rows)"
    assert msg.endswith(remedy), msg


def test_one_constant_column_and_a_constant_test_target_are_fine():
    X = np.column_stack([np.arange(5.0), np.full(5, 3.0)])
    data = make(X, np.arange(5.0), X_test=np.ones((2, 2)), y_test=np.zeros(2))
    assert data.n_features == 2
    make(X, np.array([0, 1, 0, 1, 1]), "classification", y_test=np.zeros(1, dtype=np.int64))


def test_degenerate_data_from_a_loader_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=20), "b": rng.normal(size=20), "y": 4.0})
    frame.to_csv(tmp_path / "const.csv", index=False)
    with pytest.raises(DataError, match="y_train is constant"):
        Table(Table.Params(path=str(tmp_path / "const.csv"), target="y")).load(0)
    frame.assign(a=1.0, b=2.0, y=rng.normal(size=20)).to_csv(tmp_path / "flat.csv", index=False)
    with pytest.raises(DataError, match="every feature column of X_train is constant"):
        Table(Table.Params(path=str(tmp_path / "flat.csv"), target="y")).load(0)
    frame.assign(y=["cat"] * 19 + ["dog"]).to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(DataError, match="single class"):  # the only dog is in the test split
        Table(Table.Params(path=str(tmp_path / "one.csv"), target="y", task="classification",
                           split_column=None, test_fraction=0.05, split_seed=_seed_with_test(
                               20, 0.05, 19))).load(0)
    frame.head(2).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(DataError, match="single row"):
        Table(Table.Params(path=str(tmp_path / "two.csv"), target="y")).load(0)


def _seed_with_test(n: int, fraction: float, row: int) -> int:
    """A split seed whose fixed split puts ``row`` in the test split."""
    from moebench.datafiles import fixed_split

    return next(s for s in range(1000) if row in fixed_split(n, fraction, s)[1])


@given(n_train=st.integers(2, 12), k=st.integers(1, 16))
@settings(derandomize=True, database=None, deadline=None, max_examples=60)
def test_check_fit_possible_needs_more_rows_than_experts(n_train, k):
    """n == k fits each expert to one row (a degenerate mixture): refused, like n < k."""
    rng = np.random.default_rng(n_train)
    data = make(rng.normal(size=(n_train, 2)), rng.normal(size=n_train))
    if n_train > k:
        check_fit_possible(data, k)
        return
    with pytest.raises(DataError) as err:
        check_fit_possible(data, k)
    msg = str(err.value)
    assert f"{n_train} training rows" in msg and f"{k} experts" in msg
    assert "fewer experts" in msg and "more training rows" in msg


@needs_data
def test_a_one_image_fashion_mnist_subset_is_refused():
    with pytest.raises(DataError, match="single row"):
        fashion_mnist.FashionMNIST(fashion_mnist.FashionMNIST.Params(n_train=1)).load(0)


# ----------------------------------------------------------------------- the table loader

NAMES = st.sampled_from(["x", "y", "z", "x.1", "target", "", " x", "a b", "ü"])
NUMBERS = st.one_of(st.integers(-5, 5).map(str), st.floats(-1e3, 1e3, allow_nan=False).map(repr))
HOSTILE = st.sampled_from(["", "nan", "NaN", "inf", "-inf", "NA", "abc", "1e400", "True",
                           "False", " 2 ", '"3"', "1,5"])


@st.composite
def csv_tables(draw):
    """A small CSV text, the target and features asked for: often valid, often hostile."""
    often = st.integers(0, 3).map(bool)  # True 3 times in 4
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=draw(often)))
    clean = draw(often)  # only numbers, or hostile cells mixed in
    cells = NUMBERS if clean else st.one_of(NUMBERS, NUMBERS, HOSTILE)
    n = draw(st.integers(0, 10) if draw(st.booleans()) else st.integers(5, 10))
    rows = [[draw(cells) for _ in names] for _ in range(n)]
    if rows and not clean and draw(st.booleans()):  # a ragged row
        i = draw(st.integers(0, n - 1))
        rows[i] = rows[i][: draw(st.integers(0, len(names)))] + draw(
            st.lists(cells, max_size=2))
    target = draw(st.sampled_from(names) if draw(often) else NAMES)
    task = draw(st.sampled_from(["regression", "classification"]))
    if task == "classification" and target in names and draw(st.booleans()):
        j = names.index(target)  # class labels: a few values, possibly text
        labels = st.sampled_from(["0", "1", "2", "cat", "dog"])
        for r in rows:
            if j < len(r):
                r[j] = draw(labels)
    features = None if draw(often) else draw(st.lists(
        st.one_of(st.sampled_from(names), NAMES), min_size=1, max_size=3, unique=True))
    lines = [",".join(names)] + [",".join(r) for r in rows]
    text = "\n".join(lines) + draw(st.sampled_from(["\n", ""]))
    return text, target, task, features


_TABLE_DIR = Path(tempfile.mkdtemp(prefix="moebench-hostile-"))
#: The refusals of a small table that come from the checks every loader shares (full messages).
SHARED_CHECKS = (
    r"cannot split [01] row\(s\) into a training and a test split",
    r"the training split has a single row: nothing can be fitted \(or validated\) from one "
    r"example; use more training rows \(check n_train / test_fraction / the split column, or a "
    r"larger file\)",
    r"every feature column of X_train is constant \(all \d+ training rows have the same "
    r"inputs\): the inputs carry no information; check the feature columns, the file or the "
    r"subsample \(a constant column next to varying ones is fine\)",
    r"the regression target y_train is constant \(\S+ in all \d+ training rows\): there is "
    r"nothing to learn; check the target column \(or its standardisation\), the split, or use "
    r"more rows",
    r"the classification training set has a single class \(\S+ in all \d+ training rows\): a "
    r"classifier needs at least 2 classes; check the target column, the split or the subsample "
    r"\(use more training rows\)",
)
_OUTCOMES: dict[str, int] = {}


@PROPERTY
@given(table=csv_tables(), test_fraction=st.sampled_from([0.2, 0.5]))
def test_table_loads_consistently_or_says_why(table, test_fraction):
    """Any small CSV: consistent finite arrays, or DataError/DataUnavailable with a message."""
    text, target, task, features = table
    path = _TABLE_DIR / "t.csv"
    path.write_text(text, encoding="utf-8")
    try:
        params = Table.Params(path=str(path), target=target, task=task, features=features,
                              test_fraction=test_fraction)
    except ValueError:  # pydantic: a feature is also the target
        return
    try:
        data = Table(params).load(0)
    except DataError as exc:  # the file exists: never DataUnavailable
        msg = str(exc)
        # the loader's own checks name the file first; the checks it shares with every loader
        # (the split, Data's validation) name the training split instead
        assert msg.startswith(f"{path}: ") or any(
            re.fullmatch(shared, msg) for shared in SHARED_CHECKS), msg
        _OUTCOMES["refused"] = _OUTCOMES.get("refused", 0) + 1
        return
    _OUTCOMES["loaded"] = _OUTCOMES.get("loaded", 0) + 1
    header = text.splitlines()[0].split(",")
    assert len(set(header)) == len(header)  # duplicates never load
    m = data.meta
    assert target not in m["feature_names"] and len(set(m["feature_names"])) == m["d"]
    assert data.X_train.shape == (m["n_train"], m["d"])
    assert data.X_test.shape == (m["n_test"], m["d"])
    rows = [line for line in text.splitlines()[1:] if line.strip()]
    assert m["n_train"] + m["n_test"] == m["n"] == len(rows)
    for a in (data.X_train, data.X_test, data.y_train, data.y_test):
        assert np.all(np.isfinite(a))
    if task == "classification":
        assert data.y_train.dtype == np.int64 and np.unique(data.y_train).size >= 2


def test_the_table_property_test_sees_both_outcomes():
    """Guard against a generator that only ever produces unloadable tables (or only good ones)."""
    if not _OUTCOMES:
        test_table_loads_consistently_or_says_why()
    assert _OUTCOMES.get("loaded", 0) >= 10 and _OUTCOMES.get("refused", 0) >= 10, _OUTCOMES


@pytest.mark.parametrize("header,dupes", [
    ("x,y,x", ["'x'"]),              # a feature twice: pandas would read x and x.1
    ("y,x,y", ["'y'"]),              # the target twice: the second copy became feature y.1
    ("x,x,y,y", ["'x'", "'y'"]),
    (",,y", ["''"]),                 # two unnamed columns
    ('"x",x,y', ["'x'"]),            # quoting does not make a name different
])
@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_duplicate_header_names_are_named(tmp_path, header, dupes, suffix):
    sep = "\t" if suffix == ".tsv" else ","
    rows = [",".join(str(i * j % 7) for j in range(len(header.split(",")))) for i in range(9)]
    text = "\n".join([header, *rows]).replace(",", sep)
    path = tmp_path / f"dup{suffix}"
    path.write_text(text + "\n")
    with pytest.raises(DataError) as err:
        Table(Table.Params(path=str(path), target="y")).load(0)
    msg = str(err.value)
    assert str(path) in msg and "duplicate column name" in msg
    for name in dupes:
        assert name in msg


def test_duplicate_names_in_parquet_and_npz(tmp_path):
    table = pa.table([pa.array([1.0, 2.0, 3.0]), pa.array([4.0, 5.0, 7.0]),
                      pa.array([0.5, 0.1, 0.9])], names=["x", "x", "y"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"duplicate column name\(s\) 'x'"):
        Table(Table.Params(path=str(tmp_path / "dup.parquet"), target="y")).load(0)
    np.savez(tmp_path / "clash.npz", X=np.eye(4), x1=np.arange(4.0), y=np.arange(4.0))
    with pytest.raises(DataError, match="'x1' has the name of a column of X"):
        Table(Table.Params(path=str(tmp_path / "clash.npz"), target="y")).load(0)


def test_a_row_with_more_fields_than_the_header_is_refused(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("x,y\n1,2,3\n4,5,6\n7,8,9\n")  # pandas would make column 1 the index
    with pytest.raises(DataError, match="more fields than the header"):
        Table(Table.Params(path=str(path), target="y")).load(0)


@pytest.mark.parametrize("name", ["absent.csv", "absent.parquet", "absent.npz",
                                  "no_dir/data.csv", "~/definitely-not-here-moebench.csv"])
def test_a_mistyped_table_path_says_no_such_file(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    for given_path in (name, str(tmp_path / name)):
        with pytest.raises(DataUnavailable) as err:
            Table(Table.Params(path=given_path, target="y")).load(0)
        expected = Path(given_path).expanduser()
        assert f"no such file: {expected}" in str(err.value)
    with pytest.raises(DataError, match="is a directory"):
        Table(Table.Params(path=str(tmp_path), target="y")).load(0)


@pytest.mark.parametrize("cls", [uci.Airfoil, uci.Concrete, uci.UCIGal,
                                 fashion_mnist.FashionMNIST])
def test_a_mistyped_data_directory_says_no_such_file(tmp_path, cls):
    params = {"name": "yacht"} if cls is uci.UCIGal else {}
    typo = tmp_path / "typo"
    with pytest.raises(DataUnavailable) as err:
        cls(cls.Params(path=str(typo), **params)).load(0)
    assert f"no such file or directory: {typo}" in str(err.value)


# ------------------------------------------------------------------ corrupt compressed files


def corrupt(data: bytes, how: str) -> bytes:
    b = bytearray(data)
    if how == "truncated":
        return bytes(b[: len(b) // 2])
    if how == "cut-header":
        return bytes(b[:6])
    if how == "empty":
        return b""
    if how == "bit-flip":
        b[len(b) // 2] ^= 0x10
    elif how == "crc-flip":  # the gzip trailer (CRC-32, size) or the end of a zip directory
        b[-6] ^= 0x01
    elif how == "garbage-tail":
        b += b"\x00garbage"
    return bytes(b)


HOW = ["truncated", "cut-header", "empty", "bit-flip", "crc-flip", "garbage-tail"]


def mirror(src: Path, dest: Path, relpaths: list[str], changed: dict[str, bytes]) -> Path:
    """``dest`` with symlinks to ``src``'s files, except ``changed`` ones written as given."""
    for rel in relpaths:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in changed:
            target.write_bytes(changed[rel])
        else:
            target.symlink_to(src / rel)
    return dest


@needs_data
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("relpath", ["t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                                     "train-labels-idx1-ubyte.gz"])
def test_corrupt_fashion_mnist_gz_is_a_checksum_mismatch(tmp_path, relpath, how):
    src = SHARED / "fashion-mnist"
    bad = corrupt((src / relpath).read_bytes(), how)
    root = mirror(src, tmp_path / "fm", [f.relpath for f in fashion_mnist.SOURCE.files],
                  {relpath: bad})
    assert check_files(fashion_mnist.SOURCE, root)[relpath] == "mismatch"
    with pytest.raises(DataError) as err:
        fashion_mnist.FashionMNIST(fashion_mnist.FashionMNIST.Params(path=str(root))).load(0)
    msg = str(err.value)
    assert f"checksum mismatch for {root / relpath}" in msg
    assert "run `moebench data fetch fashion-mnist --force`" in msg
    # the IDX reader on its own: a DataError, never EOFError / zlib.error / BadGzipFile
    path = root / relpath
    with pytest.raises(DataError) as err:
        fashion_mnist.read_idx(path)
    msg = str(err.value)
    if how == "empty":  # valid gzip of nothing: no IDX header
        assert msg == f"{path}: not an IDX file (bad magic number)"
    else:
        assert msg.startswith(f"{path}: corrupt gzip data ("), msg
        assert msg.endswith(f"): checksum mismatch for {path}, run `moebench data fetch "
                            "fashion-mnist --force` (or replace the file with the published "
                            "one)"), msg


@needs_data
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("cls", [uci.Concrete, uci.EnergyEfficiency, uci.StockPortfolio,
                                 uci.Airfoil])
def test_corrupt_uci_file_is_a_checksum_mismatch(tmp_path, cls, how):
    """Spreadsheets (.xlsx are zip archives) too, although re-saved copies only warn.

    A spreadsheet's bytes are not canonical (every copy is re-saved), its cell values are: a
    damaged spreadsheet whose values all still read back as the published ones (a flipped bit in
    an unused block, bytes after the zip directory) is loaded, unverified, with a warning.
    """
    relpath = cls.source.files[0].relpath
    src = SHARED / cls.source.subdir
    root = mirror(src, tmp_path / "d", [relpath],
                  {relpath: corrupt((src / relpath).read_bytes(), how)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = cls(cls.Params(path=str(root))).load(0)
        except DataError as exc:
            msg = str(exc)
            assert f"checksum mismatch for {root / relpath}" in msg, msg
            assert f"run `moebench data fetch {cls.source.name} --force`" in msg
            return
    assert not cls.source.files[0].exact, "an exact file with other bytes must be refused"
    warned = (f"{cls.source.name}: {relpath} in {root} differ from the recorded copy "
              "(spreadsheets are often re-saved); the contents are checked by shape instead")
    assert [str(w.message) for w in caught if w.category is UserWarning].count(warned) == 1, caught
    assert loaded.meta["verified"] is False
    reference = cls(cls.Params()).load(0)
    assert np.array_equal(loaded.X_train, reference.X_train)
    assert np.array_equal(loaded.y_test, reference.y_test)


@needs_data
@pytest.mark.parametrize("cls", [uci.Concrete, uci.EnergyEfficiency, uci.StockPortfolio])
def test_a_spreadsheet_with_other_values_is_a_checksum_mismatch(tmp_path, cls, monkeypatch):
    """A copy that reads but whose cell values differ from the published ones is refused."""
    relpath = cls.source.files[0].relpath
    root = mirror(SHARED / cls.source.subdir, tmp_path / "d", [relpath], {})
    original = uci._read_excel

    def edited(path, **kwargs):
        frame = original(path, **kwargs)
        frame.iloc[-1, -1] = 0.123  # one cell edited, as in an "edited copy" of the data
        return frame

    monkeypatch.setattr(uci, "_read_excel", edited)
    monkeypatch.setattr(uci, "check_files", lambda *a, **k: {relpath: "mismatch"})
    with pytest.raises(DataError) as err:
        cls(cls.Params(path=str(root))).load(0)
    msg = str(err.value)
    assert f"checksum mismatch for {root / relpath}" in msg and "cell values differ" in msg
    assert f"moebench data fetch {cls.source.name} --force" in msg


@needs_data
def test_a_re_saved_spreadsheet_with_the_same_values_still_loads(tmp_path):
    """Only the bytes differ (Excel re-stamps them): a warning, and the same data."""
    relpath = uci.Concrete.source.files[0].relpath
    data = bytearray((SHARED / "concrete" / relpath).read_bytes())
    data[560] ^= 0x01  # inside the WRITEACCESS user name that Excel re-stamps
    root = mirror(SHARED / "concrete", tmp_path / "c", [relpath], {relpath: bytes(data)})
    with pytest.warns(UserWarning, match="differ from the recorded copy"):
        loaded = uci.Concrete(uci.Concrete.Params(path=str(root))).load(0)
    reference = uci.Concrete(uci.Concrete.Params()).load(0)
    assert np.array_equal(loaded.X_train, reference.X_train)
    assert loaded.meta["verified"] is False


# ------------------------------------------------------------- the UCI split index files


@needs_data
def test_every_split_file_has_an_embedded_checksum(tmp_path):
    """Without MANIFEST.tsv next to them the 366 files still verify: checksums are in the code."""
    source = uci.UCIGal.source
    assert all(f.md5 for f in source.files)
    root = mirror(SHARED / "uci-gal-splits", tmp_path / "uci-gal-splits",
                  [f.relpath for f in source.files], {})
    assert not (tmp_path / "MANIFEST.tsv").exists()
    assert set(check_files(source, root).values()) == {"ok"}


def _swap_one(train: bytes, test: bytes) -> tuple[bytes, bytes]:
    """Move one index from train to test and one back: still a valid partition."""
    tr, te = train.decode().split(), test.decode().split()
    tr[0], te[0] = te[0], tr[0]
    return ("\n".join(tr) + "\n").encode(), ("\n".join(te) + "\n").encode()


@needs_data
@pytest.mark.parametrize("kind", ["index_train", "index_test", "swap", "index_features",
                                  "index_target", "n_splits", "data", "whitespace"])
def test_a_modified_split_file_is_detected(tmp_path, kind):
    spec, split = uci.GAL["yacht"], 3
    base = f"{spec.dir}/data/"
    src = SHARED / "uci-gal-splits"
    files = uci.gal_files("yacht", split)
    read = {rel: (src / rel).read_bytes() for rel in files}
    train, test = base + f"index_train_{split}.txt", base + f"index_test_{split}.txt"
    changed = {}
    if kind == "swap":
        changed[train], changed[test] = _swap_one(read[train], read[test])
    elif kind == "whitespace":  # same numbers, other bytes: still not the published file
        changed[train] = read[train].replace(b"\n", b"\r\n")
    elif kind == "data":
        changed[base + "data.txt"] = read[base + "data.txt"].replace(b"0.", b"1.", 1)
    else:
        rel = train if kind == "index_train" else test if kind == "index_test" else (
            base + f"{kind}.txt")
        changed[rel] = read[rel][:-2] + b"\n" if len(read[rel]) > 3 else b"0\n"
    root = mirror(src, tmp_path / "uci-gal-splits", files, changed)
    with pytest.raises(DataError) as err:
        uci.UCIGal(uci.UCIGal.Params(name="yacht", split=split, path=str(root))).load(0)
    msg = str(err.value)
    for rel in changed:
        assert f"checksum mismatch for {root / rel}" in msg
    assert "moebench data fetch uci-gal --force" in msg


@pytest.fixture(scope="module", autouse=True)
def _cleanup_table_dir():
    yield
    shutil.rmtree(_TABLE_DIR, ignore_errors=True)
