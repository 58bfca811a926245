"""CIFAR-10 (Krizhevsky 2009) from the standard "python version" batches.

The directory ``cifar-10-batches-py`` of ``cifar-10-python.tar.gz`` holds ``data_batch_1`` ..
``data_batch_5`` (training, 5 x 10000 images), ``test_batch`` (10000 images) and
``batches.meta``. Each batch is a pickled dict with ``b"data"`` (a ``10000 x 3072`` ``uint8``
array: 1024 red, then 1024 green, then 1024 blue values of a 32 x 32 image, row-major) and
``b"labels"`` (a list of 10000 integers in ``0..9``); ``batches.meta`` has ``b"label_names"``.

Files are looked up as ``cifar10/<file>`` under ``$MOEBENCH_DATA`` or the cache, or in the
directory ``path``; ``moebench data fetch cifar10`` downloads the tarball from
https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a)
and extracts the batches. Their published md5s are checked before anything is unpickled, and
unpickling accepts only plain containers and numpy arrays.

Inputs are scaled to ``[0, 1]`` (``float32``, ``n x 3072`` in the files' channel-major order),
optionally standardised per colour channel with training statistics. Default model:
``deep-moe`` with ``k = 5`` (``meta["n_classes"] = 10``).
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from moebench import Data, Dataset, ModelSpec, Params, hookimpl
from moebench.datafiles import Archive, DataFile, DataSource, locate, reading, subsample, verify
from moebench.errors import DataError

__all__ = ["CIFAR10", "read_batch"]

CITATION = "A. Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Technical " \
           "report, University of Toronto, 2009."
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_BATCH = "test_batch"
META = "batches.meta"
_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

SOURCE = DataSource(
    name="cifar10",
    subdir="cifar10",
    files=tuple(DataFile(name, md5) for name, md5 in _MD5.items()),
    citation=CITATION,
    license="no explicit licence; free to use for research with citation (Krizhevsky 2009)",
    archive=Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        filename="cifar-10-python.tar.gz",
        member_prefix="cifar-10-batches-py/",
    ),
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
)

#: The only globals a CIFAR batch pickle may reference (numpy array reconstruction, bytes).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"a CIFAR batch may not reference {module}.{name}")
        return getattr(importlib.import_module(target[0]), target[1])


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        try:
            obj = _SafeUnpickler(fh, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (a {type(obj).__name__})")
    return obj


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3072)`` ``uint8`` and labels ``(n,)`` ``int64`` of one batch file."""
    path = Path(path)
    batch = _unpickle(path)
    if b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: a CIFAR-10 batch needs the keys b'data' and b'labels' "
                        f"(found {sorted(batch)})")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: b'data' must be uint8 of shape (n, 3072), got "
                        f"{data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: b'labels' must be {data.shape[0]} integers in 0..9")
    return data, labels


class CIFAR10(Dataset):
    """CIFAR-10: 32 x 32 colour images of 10 classes, 50000 training and 10000 test."""

    name = "cifar10"
    summary = "CIFAR-10 python batches, 50000/10000 x 3072 in [0,1], 10 classes"
    task = "classification"
    source: ClassVar[DataSource] = SOURCE

    class Params(Params):
        """Parameters of the CIFAR-10 loader."""

        path: str | None = Field(
            None, description="directory holding data_batch_1..5, test_batch, batches.meta "
            "(default: MOEBENCH_DATA/cifar10, the cache)"
        )
        n_train: int | None = Field(
            None, ge=1, description="use a fixed random subset of this many training images"
        )
        n_test: int | None = Field(
            None, ge=1, description="use a fixed random subset of this many test images"
        )
        subsample_seed: int = Field(0, ge=0, description="seed of the subsets")
        standardize: bool = Field(
            False, description="standardise each colour channel with the training mean and std"
        )
        verify: bool = Field(
            True, description="check the published md5 of every file before reading it (turn "
            "off only for your own files in the same format)"
        )

    def load(self, seed: int) -> Data:
        """The official split (or its fixed subsets); ``seed`` is not used."""
        p = self.params
        root, where = locate(SOURCE, p.path)
        verified = verify(SOURCE, root) if p.verify else False
        with reading(SOURCE, root) if p.verify else contextlib.nullcontext():
            meta_file = _unpickle(root / META)
            parts = [read_batch(root / b) for b in TRAIN_BATCHES]
            X_test, y_test = read_batch(root / TEST_BATCH)
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in meta_file.get(b"label_names", [])]
        if len(names) != 10:
            raise DataError(f"{root / META}: expected 10 label names, found {names}")
        X_train = np.concatenate([x for x, _ in parts])
        y_train = np.concatenate([y for _, y in parts])
        n_full = (X_train.shape[0], X_test.shape[0])
        idx = subsample(X_train.shape[0], p.n_train, 2 * p.subsample_seed)
        if idx is not None:
            X_train, y_train = X_train[idx], y_train[idx]
        idx = subsample(X_test.shape[0], p.n_test, 2 * p.subsample_seed + 1)
        if idx is not None:
            X_test, y_test = X_test[idx], y_test[idx]
        Xtr = X_train.astype(np.float32)
        Xtr *= np.float32(1.0 / 255.0)
        Xte = X_test.astype(np.float32)
        Xte *= np.float32(1.0 / 255.0)
        channel_mean, channel_std = [0.0] * 3, [1.0] * 3
        if p.standardize:
            by_channel = Xtr.reshape(Xtr.shape[0], 3, 1024)
            mean = by_channel.mean(axis=(0, 2), dtype=np.float64)
            std = by_channel.std(axis=(0, 2), dtype=np.float64)
            std[~(std > 0)] = 1.0
            m = np.repeat(mean, 1024).astype(np.float32)
            s = np.repeat(std, 1024).astype(np.float32)
            Xtr, Xte = (Xtr - m) / s, (Xte - m) / s
            channel_mean, channel_std = mean.tolist(), std.tolist()
        return Data(
            X_train=Xtr, y_train=y_train, X_test=Xte, y_test=y_test,
            task="classification",
            model=ModelSpec("deep-moe", {"k": 5}),
            truth=None,
            meta={
                "n": int(sum(n_full)),
                "n_train": int(y_train.size),
                "n_test": int(y_test.size),
                "d": 3072,
                "task": "classification",
                "n_classes": 10,
                "label_names": names,
                "standardized": p.standardize,
                "channel_mean": channel_mean,
                "channel_std": channel_std,
                "source": "CIFAR-10 python version (cifar-10-python.tar.gz)",
                "citation": CITATION,
                "license": SOURCE.license,
                "data_dir": str(root),
                "found_in": where,
                "verified": verified,
            },
        )


@hookimpl
def register_datasets(register: Callable[[type], None]) -> None:
    """Register :class:`CIFAR10`."""
    register(CIFAR10)
