"""Real datasets: every loader reads ../shared/data (MOEBENCH_DATA); CIFAR-10 from a fake set."""

from __future__ import annotations

import json
import os
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from moebench import EvalContext
from moebench.cli import main
from moebench.datafiles import check_files
from moebench.errors import DataError, DataUnavailable
from moebench.reports.results import read_results
from moebench.runner import run_suite
from moebench.suite import parse_suite
from moebench_plugins.datasets import cifar10, fashion_mnist, uci
from moebench_plugins.metrics.original_units import HeldOutMSEOriginal, HeldOutRMSEOriginal

SHARED = Path(os.environ["MOEBENCH_DATA"]) if os.environ.get("MOEBENCH_DATA") else None
needs_data = pytest.mark.skipif(SHARED is None or not (SHARED / "MANIFEST.tsv").is_file(),
                                reason="needs ../shared/data (set MOEBENCH_DATA)")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache and no downloads; MOEBENCH_DATA stays as conftest set it."""
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOEBENCH_OFFLINE", "1")


def load(cls, seed: int = 0, **params):
    return cls(cls.Params(**params)).load(seed)


# ----------------------------------------------------------------------------------- UCI

ORIGINAL = [
    (uci.Airfoil, {}, 1503, 5),
    (uci.Concrete, {}, 1030, 8),
    (uci.EnergyEfficiency, {}, 768, 8),
    (uci.EnergyEfficiency, {"target": "Y2"}, 768, 8),
    (uci.Yacht, {}, 308, 6),
    (uci.StockPortfolio, {}, 63, 6),
    (uci.StockPortfolio, {"target": "total_risk", "sheet": "3rd period"}, 63, 6),
]


@needs_data
@pytest.mark.parametrize("cls,params,n,d", ORIGINAL, ids=lambda v: getattr(v, "name", None))
def test_original_format_uci_sets_load_with_documented_shapes(cls, params, n, d):
    data = load(cls, **params)
    assert data.task == "regression"
    assert data.X_train.shape[1] == data.X_test.shape[1] == d
    assert data.X_train.shape[0] + data.X_test.shape[0] == n
    assert data.X_test.shape[0] == round(0.1 * n)
    m = data.meta
    assert (m["n"], m["d"], m["task"]) == (n, d, "regression")
    assert m["citation"] and m["source"] and len(m["feature_names"]) == d
    assert m["verified"] is True and m["found_in"] == "$MOEBENCH_DATA"
    assert data.model.name == "regression-moe" and data.model.params["intercept"] is True
    # standardised with training statistics only
    assert np.allclose(data.X_train.mean(axis=0), 0, atol=1e-10)
    assert np.allclose(data.X_train.std(axis=0), 1, atol=1e-10)
    assert abs(data.y_train.mean()) < 1e-10 and abs(data.y_train.std() - 1) < 1e-10
    assert abs(data.y_test.mean()) > 1e-6  # the test split is not standardised by itself


@needs_data
def test_split_is_fixed_not_the_run_seed():
    a, b = load(uci.Airfoil, seed=0), load(uci.Airfoil, seed=99)
    assert np.array_equal(a.X_test, b.X_test) and np.array_equal(a.y_train, b.y_train)
    c = load(uci.Airfoil, split_seed=1)
    assert not np.array_equal(a.y_test, c.y_test)
    half = load(uci.Airfoil, test_fraction=0.5)
    assert half.X_test.shape[0] == 752


@needs_data
def test_targets_in_original_units_are_recoverable():
    raw = np.loadtxt(SHARED / "yacht" / "yacht_hydrodynamics.data")
    data = load(uci.Yacht)
    y = np.concatenate([data.y_train, data.y_test]) * data.meta["y_scale"] + data.meta["y_mean"]
    assert np.allclose(np.sort(y), np.sort(raw[:, 6]))
    plain = load(uci.Yacht, standardize=False)
    assert plain.meta["y_scale"] == 1.0 and plain.meta["y_mean"] == 0.0
    assert np.allclose(np.sort(np.concatenate([plain.y_train, plain.y_test])), np.sort(raw[:, 6]))
    stock = load(uci.StockPortfolio, standardize=False)
    assert 0.0 < stock.y_train.min() and stock.y_train.max() < 1.0  # annual returns
    assert np.allclose(np.concatenate([stock.X_train, stock.X_test]).sum(axis=1), 1, atol=0.01)


GAL_SHAPES = {"boston": (506, 13), "concrete": (1030, 8), "energy": (768, 8),
              "kin8nm": (8192, 8), "naval": (11934, 16), "power-plant": (9568, 4),
              "protein": (45730, 9), "wine-red": (1599, 11), "yacht": (308, 6)}


@needs_data
@pytest.mark.parametrize("name", sorted(GAL_SHAPES))
def test_gal_benchmark_uses_the_published_index_splits(name):
    n, d = GAL_SHAPES[name]
    spec = uci.GAL[name]
    base = SHARED / "uci-gal-splits" / spec.dir / "data"
    last = spec.n_splits - 1
    for split in (0, last):
        data = load(uci.UCIGal, name=name, split=split)
        train_idx = np.loadtxt(base / f"index_train_{split}.txt", dtype=np.int64)
        test_idx = np.loadtxt(base / f"index_test_{split}.txt", dtype=np.int64)
        assert data.X_train.shape == (train_idx.size, d)
        assert data.X_test.shape == (test_idx.size, d)
        assert train_idx.size + test_idx.size == n
        assert data.meta["verified"] is True and data.meta["n"] == n
        raw = pd.read_csv(base / "data.txt", sep=r"\s+", header=None).to_numpy()
        y = data.y_test * data.meta["y_scale"] + data.meta["y_mean"]
        assert np.allclose(y, raw[test_idx, spec.target])
    with pytest.raises(ValueError, match="splits"):
        uci.UCIGal.Params(name=name, split=spec.n_splits)


@needs_data
@pytest.mark.parametrize("cls", [uci.Airfoil, uci.Concrete, uci.StockPortfolio,
                                 uci.EnergyEfficiency, uci.Yacht, uci.UCIGal,
                                 fashion_mnist.FashionMNIST])
def test_every_shared_file_matches_its_checksum(cls):
    root = SHARED / cls.source.subdir
    statuses = check_files(cls.source, root)
    assert statuses and set(statuses.values()) == {"ok"}, statuses
    if cls is uci.UCIGal:
        assert len(statuses) == 9 * 4 + 8 * 40 + 5 * 2  # data, 3 index files, the splits


def test_missing_uci_file_is_reported_with_places(tmp_path):
    with pytest.raises(DataUnavailable) as err:
        load(uci.Concrete, path=str(tmp_path))
    assert "Concrete_Data.xls" in str(err.value) and str(tmp_path) in str(err.value)


def test_corrupt_copy_is_refused(tmp_path):
    (tmp_path / "yacht_hydrodynamics.data").write_text("1 2 3 4 5 6 7\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        load(uci.Yacht, path=str(tmp_path))


# -------------------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="module")
def fashion():
    if SHARED is None or not (SHARED / "fashion-mnist").is_dir():
        pytest.skip("needs ../shared/data/fashion-mnist")
    cls = fashion_mnist.FashionMNIST
    return load(cls), load(cls, variant="moe2")


def test_fashion_mnist_shapes_labels_and_range(fashion):
    data, _ = fashion
    assert data.X_train.shape == (60000, 784) and data.X_test.shape == (10000, 784)
    assert data.X_train.dtype == np.float32
    assert data.X_train.min() == 0.0 and data.X_train.max() == 1.0
    assert np.array_equal(np.bincount(data.y_train), np.full(10, 6000))
    assert np.array_equal(np.bincount(data.y_test), np.full(10, 1000))
    assert data.y_train.dtype == np.int64
    assert data.meta["n_classes"] == 10 and len(data.meta["label_names"]) == 10
    assert data.meta["verified"] is True and data.truth is None
    assert data.model.name == "logistic-moe" and data.model.params["k"] == 2


def test_fashion_mnist_moe2_construction(fashion):
    original, moe2 = fashion
    z_train, z_test = fashion_mnist.moe2_latent(0)
    assert 0.49 < z_train.mean() < 0.51
    for split, z in (("train", z_train), ("test", z_test)):
        X0, y0 = getattr(original, f"X_{split}"), getattr(original, f"y_{split}")
        X1, y1 = getattr(moe2, f"X_{split}"), getattr(moe2, f"y_{split}")
        assert np.array_equal(X1[~z], X0[~z]) and np.array_equal(y1[~z], y0[~z])
        assert np.allclose(X1[z], 1 - X0[z], atol=1e-6)
        assert np.array_equal(y1[z], (y0[z] + 1) % 10)
    # a linear gate detects the latent expert: border pixels exactly, mean intensity mostly
    border = np.zeros((28, 28), dtype=bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    gate = moe2.X_train[:, border.ravel()].mean(axis=1) - 0.5
    assert np.array_equal(gate > 0, z_train)
    assert np.mean((moe2.X_train.mean(axis=1) > 0.5) == z_train) > 0.9
    assert moe2.meta["variant"] == "moe2" and "Fruytier" in moe2.meta["citation"]


def test_fashion_mnist_subsets_are_fixed(fashion):
    cls = fashion_mnist.FashionMNIST
    a = load(cls, n_train=500, n_test=200, variant="moe2")
    b = load(cls, seed=5, n_train=500, n_test=200, variant="moe2")
    assert a.X_train.shape == (500, 784) and a.X_test.shape == (200, 784)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    c = load(cls, n_train=500, n_test=200, variant="moe2", subsample_seed=1)
    assert not np.array_equal(a.y_train, c.y_train)


def test_idx_reader_checks_magic_numbers(tmp_path):
    import gzip

    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    assert fashion_mnist.read_idx(path, 0x801).tolist() == [1, 2, 3]
    with pytest.raises(DataError, match="magic"):
        fashion_mnist.read_idx(path, 0x803)
    with gzip.open(path, "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes([1, 2, 3]))
    with pytest.raises(DataError, match="IDX header"):
        fashion_mnist.read_idx(path)


# ------------------------------------------------------------------------------- CIFAR-10


def write_fake_cifar(root: Path, n: int = 12) -> dict[str, np.ndarray]:
    """Batches in exactly the python-version format: protocol-2 pickles with bytes keys."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        batch = {b"batch_label": f"fake {name}".encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        with open(root / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        out[name] = data
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    with open(root / cifar10.META, "wb") as fh:
        pickle.dump({b"num_cases_per_batch": n, b"label_names": names, b"num_vis": 3072}, fh,
                    protocol=2)
    return out


def test_cifar10_reads_python_batches(tmp_path):
    raw = write_fake_cifar(tmp_path / "cifar")
    cls = cifar10.CIFAR10
    data = load(cls, path=str(tmp_path / "cifar"), verify=False)
    assert data.X_train.shape == (60, 3072) and data.X_test.shape == (12, 3072)
    assert data.X_train.dtype == np.float32
    assert np.allclose(data.X_train[:12] * 255, raw["data_batch_1"])
    assert np.allclose(data.X_test * 255, raw["test_batch"])
    assert data.meta["label_names"][0] == "airplane" and data.meta["n_classes"] == 10
    assert data.model.name == "deep-moe" and data.model.params["k"] == 5
    sub = load(cls, path=str(tmp_path / "cifar"), verify=False, n_train=20, n_test=5,
               standardize=True)
    assert sub.X_train.shape == (20, 3072) and sub.X_test.shape == (5, 3072)
    channels = sub.X_train.reshape(20, 3, 1024)
    assert np.allclose(channels.mean(axis=(0, 2)), 0, atol=1e-5)
    assert np.allclose(channels.std(axis=(0, 2)), 1, atol=1e-4)
    # the fake files are not the published ones: with verification on they are refused
    with pytest.raises(DataError, match="checksum mismatch"):
        load(cls, path=str(tmp_path / "cifar"))


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    write_fake_cifar(tmp_path / "cifar")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "cifar" / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh, protocol=2)
    with pytest.raises(DataError, match="may not reference"):
        load(cifar10.CIFAR10, path=str(tmp_path / "cifar"), verify=False)


def test_cifar10_missing_skips_its_cells_and_the_rest_runs(fresh_plugins, tmp_path):
    suite = parse_suite(textwrap.dedent("""
        name: cifar-missing
        seed: 1
        repetitions: 1
        budget: {max_iter: 2, timeout: 30}
        metrics: [train_nll, test_nll]
        leaderboard: {rank_by: test_nll}
        datasets:
          - name: synthetic-moe
            params: {n: 100, n_test: 50, d: 3, k: 2}
          - name: cifar10
            params: {n_train: 100}
        algorithms:
          - name: joint-em
    """))
    frame = read_results(run_suite(suite, tmp_path / "out"))
    finals = frame[frame["record"] == "final"].set_index("dataset_name")
    assert finals.loc["cifar10", "status"] == "skipped"
    message = finals.loc["cifar10", "message"]
    assert "data_batch_1" in message and "moebench data fetch cifar10" in message
    assert finals.loc["synthetic-moe", "status"] in ("done", "max_iter")


# ------------------------------------------------------------------ metrics and listing


class _Fixed:
    """A stand-in model that predicts fixed values."""

    task = "regression"

    def __init__(self, pred):
        self.pred = pred

    def predict(self, params, X):
        return self.pred


def test_errors_in_original_units():
    y_test = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64)
    pred = torch.tensor([0.5, 1.0, -1.5, 1.0], dtype=torch.float64)
    ctx = EvalContext(_Fixed(pred), {}, y_test[:, None], y_test, y_test[:, None], y_test, None,
                      {"y_mean": 10.0, "y_scale": 3.0})
    mse = float(((y_test - pred) ** 2).mean())
    original = (y_test * 3 + 10, pred * 3 + 10)
    assert HeldOutRMSEOriginal()(ctx) == pytest.approx(
        float(((original[0] - original[1]) ** 2).mean().sqrt()))
    assert HeldOutMSEOriginal()(ctx) == pytest.approx(9 * mse)
    no_scale = EvalContext(_Fixed(pred), {}, y_test[:, None], y_test, y_test[:, None], y_test,
                           None, {})
    assert HeldOutRMSEOriginal()(no_scale) == pytest.approx(np.sqrt(mse))


def test_every_dataset_is_listed(fresh_plugins):
    result = CliRunner().invoke(main, ["list", "datasets", "--json"])
    assert result.exit_code == 0, result.output
    names = {row["name"] for row in json.loads(result.output)}
    assert {"synthetic-moe", "airfoil", "concrete", "stock-portfolio", "energy-efficiency",
            "yacht", "uci-gal", "fashion-mnist", "cifar10", "table"} <= names
