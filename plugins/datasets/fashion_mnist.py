"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from its IDX files, and a 2-expert variant.

``fashion-mnist`` reads the four gzip-compressed IDX files (``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``):
60000 training and 10000 test images of 28 x 28 pixels, flattened to 784 inputs scaled to
``[0, 1]`` (``float32``), and integer labels ``0..9``. The official split is kept; ``n_train`` /
``n_test`` draw a fixed subsample (seed ``subsample_seed``) for quick runs.

``variant: moe2`` is a *mixture of 2 logistic experts* built from the images, in the spirit of
the Fashion-MNIST experiment of Fruytier et al. (2025), whose exact recipe is not public. The
construction (seeded by ``construction_seed``, independent of the run's seed):

1. every image ``i`` of the full training and test sets gets a latent expert
   ``z_i ~ Bernoulli(1/2)``: ``rng = np.random.default_rng(construction_seed)``, then
   ``z_train = rng.random(60000) < 0.5`` and ``z_test = rng.random(10000) < 0.5``, drawn before
   any subsampling, so an image's ``z`` does not depend on ``n_train``;
2. images with ``z = 1`` are intensity-inverted, ``x -> 1 - x`` (pixel byte ``v`` becomes
   ``(255 - v) / 255``). Fashion-MNIST images have a black background: the 108 border pixels are
   0 in every image, so after inversion they are 1 and a linear gate on the border pixels with
   an intercept detects ``z`` exactly (the mean intensity alone, about 0.29 against 0.71,
   separates about 95% of the images);
3. images with ``z = 1`` have their label permuted, ``c -> (c + label_shift) mod 10`` (default
   ``label_shift = 1``), so the second expert must learn a different class map from the first.

The ground-truth parameters are not known (``truth`` is ``None``). :func:`moe2_latent`
returns the latent ``z`` for tests and analyses. ``variant: original`` keeps the untouched data.

Default model: ``logistic-moe`` with ``k = 2`` and an intercept (``meta["n_classes"] = 10``).
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from moebench import Data, Dataset, ModelSpec, Params, hookimpl
from moebench.datafiles import (
    DECOMPRESSION_ERRORS,
    DataFile,
    DataSource,
    locate,
    reading,
    subsample,
    verify,
)
from moebench.errors import DataError

__all__ = ["FashionMNIST", "moe2_latent", "read_idx"]

LABEL_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
CITATION = (
    "H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking "
    "Machine Learning Algorithms. arXiv:1708.07747, 2017."
)
MOE2_CITATION = (
    "moe2 variant: moebench construction (intensity inversion + label shift) after the "
    "mixture-of-2-logistic-experts experiment of Q. Fruytier, A. Mokhtari, S. Sanghavi. Learning "
    "Mixtures of Experts with EM: A Mirror Descent Perspective. ICML 2025."
)
_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
N_TRAIN, N_TEST = 60000, 10000

SOURCE = DataSource(
    name="fashion-mnist",
    subdir="fashion-mnist",
    files=(
        DataFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                 "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                 url=_URL + "train-images-idx3-ubyte.gz",
                 content_md5="f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        DataFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                 "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                 url=_URL + "train-labels-idx1-ubyte.gz",
                 content_md5="9018921c3c673c538a1fc5bad174d6f9"),
        DataFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                 "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                 url=_URL + "t10k-images-idx3-ubyte.gz",
                 content_md5="8181f5470baa50b63fa0f6fddb340f0a"),
        DataFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                 "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                 url=_URL + "t10k-labels-idx1-ubyte.gz",
                 content_md5="15d484375f8d13e6eb1aabb0c3f46965"),
    ),
    citation=CITATION,
    license="MIT (c) 2017 Zalando SE",
    debian_dir="/usr/share/datasets/fashion-mnist",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
)


def _gunzip(path: str | Path, size: int = -1) -> bytes:
    """The decompressed bytes (the first ``size`` of them); a corrupt file is a DataError."""
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(size)
    except DECOMPRESSION_ERRORS as exc:  # truncated or bit-flipped: EOFError, zlib.error, ...
        raise DataError(
            f"{path}: corrupt gzip data ({type(exc).__name__}: {exc}): checksum mismatch for "
            f"{path}, run `moebench data fetch {SOURCE.name} --force` (or replace the file with "
            "the published one)"
        ) from None


@functools.lru_cache(maxsize=4)
def _read_idx(path: str, size: int, mtime_ns: int) -> np.ndarray:
    buf = _gunzip(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if buf[2] != 0x08:
        raise DataError(f"{path}: IDX element type 0x{buf[2]:02x} is not unsigned byte (0x08)")
    ndim = buf[3]
    dims = np.frombuffer(buf, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: IDX header says {tuple(dims)} ({int(np.prod(dims))} bytes) but "
                        f"{data.size} bytes follow")
    return data.reshape(tuple(dims))


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Decode a (gzip-compressed) IDX file into a read-only ``uint8`` array.

    Parameters
    ----------
    path
        The ``.gz`` file.
    magic
        Expected magic number (``0x803`` for images, ``0x801`` for labels), checked if given.

    Raises
    ------
    moebench.errors.DataError
        The file is not valid gzip data (truncated, bit-flipped: "checksum mismatch for PATH,
        run `moebench data fetch fashion-mnist --force`") or not an IDX file.
    """
    path = Path(path)
    if magic is not None:
        head = _gunzip(path, 4)
        found = int.from_bytes(head, "big") if len(head) == 4 else -1
        if found != magic:
            raise DataError(f"{path}: magic number 0x{found:x}, expected 0x{magic:x}")
    st = path.stat()
    return _read_idx(str(path), st.st_size, st.st_mtime_ns)


def moe2_latent(construction_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The latent experts ``z`` (boolean) of the full training and test sets of ``moe2``."""
    rng = np.random.default_rng(construction_seed)
    return rng.random(N_TRAIN) < 0.5, rng.random(N_TEST) < 0.5


class FashionMNIST(Dataset):
    """Fashion-MNIST: 28 x 28 grey-scale images of 10 clothing classes (see module docstring)."""

    name = "fashion-mnist"
    summary = ("Fashion-MNIST from its IDX files, 60000/10000 x 784 in [0,1], 10 classes; "
               "variant moe2 = inverted images with shifted labels (2 logistic experts)")
    task = "classification"
    source: ClassVar[DataSource] = SOURCE

    class Params(Params):
        """Parameters of the Fashion-MNIST loader."""

        variant: Literal["original", "moe2"] = Field(
            "original", description="original data, or the 2-logistic-experts construction"
        )
        n_train: int | None = Field(
            None, ge=1, description="use a fixed random subset of this many training images"
        )
        n_test: int | None = Field(
            None, ge=1, description="use a fixed random subset of this many test images"
        )
        subsample_seed: int = Field(0, ge=0, description="seed of the subsets")
        construction_seed: int = Field(0, ge=0, description="seed of the moe2 latent experts")
        label_shift: int = Field(
            1, ge=1, le=9, description="moe2: labels of inverted images become (c + shift) mod 10"
        )
        path: str | None = Field(
            None, description="directory holding the four .gz files (default: MOEBENCH_DATA, "
            "the cache, /usr/share/datasets/fashion-mnist)"
        )

    def load(self, seed: int) -> Data:
        """The official split (or its fixed subsets); ``seed`` is not used."""
        p = self.params
        root, where = locate(SOURCE, p.path)
        verified = verify(SOURCE, root)  # checksums first: a corrupt .gz is never decompressed
        arrays = {}
        for part, n in (("train", N_TRAIN), ("t10k", N_TEST)):
            with reading(SOURCE, root):
                images = read_idx(root / f"{part}-images-idx3-ubyte.gz", 0x803)
                labels = read_idx(root / f"{part}-labels-idx1-ubyte.gz", 0x801)
            if images.shape != (n, 28, 28) or labels.shape != (n,):
                raise DataError(f"{root}: {part} images {images.shape} / labels {labels.shape}, "
                                f"expected ({n}, 28, 28) / ({n},)")
            if labels.max() > 9:
                raise DataError(f"{root}: {part} labels outside 0..9")
            arrays[part] = (images.reshape(n, 784), labels)
        (Xtr, ytr), (Xte, yte) = arrays["train"], arrays["t10k"]
        z_train = z_test = None
        if p.variant == "moe2":
            z_train, z_test = moe2_latent(p.construction_seed)
        out = {}
        for split, X, y, z, size, salt in (("train", Xtr, ytr, z_train, p.n_train, 0),
                                           ("test", Xte, yte, z_test, p.n_test, 1)):
            idx = subsample(X.shape[0], size, p.subsample_seed * 2 + salt)
            if idx is not None:
                X, y = X[idx], y[idx]
                z = z[idx] if z is not None else None
            y = y.astype(np.int64)
            if z is not None:
                X = X.copy()
                X[z] = 255 - X[z]  # inversion on the bytes: pixel v becomes (255 - v) / 255
                y = np.where(z, (y + p.label_shift) % 10, y)
            Xf = X.astype(np.float32)
            Xf *= np.float32(1.0 / 255.0)
            out[split] = (Xf, y)
        meta = {
            "n": N_TRAIN + N_TEST,
            "n_train": int(out["train"][1].size),
            "n_test": int(out["test"][1].size),
            "d": 784,
            "task": "classification",
            "n_classes": 10,
            "label_names": LABEL_NAMES,
            "variant": p.variant,
            "source": "Fashion-MNIST IDX files (zalandoresearch/fashion-mnist)",
            "citation": CITATION if p.variant == "original" else f"{CITATION} {MOE2_CITATION}",
            "license": SOURCE.license,
            "data_dir": str(root),
            "found_in": where,
            "verified": verified,
        }
        if p.variant == "moe2":
            meta.update(construction_seed=p.construction_seed, label_shift=p.label_shift)
        return Data(
            X_train=out["train"][0], y_train=out["train"][1],
            X_test=out["test"][0], y_test=out["test"][1],
            task="classification",
            model=ModelSpec("logistic-moe", {"k": 2, "intercept": True}),
            truth=None,
            meta=meta,
        )


@hookimpl
def register_datasets(register: Callable[[type], None]) -> None:
    """Register :class:`FashionMNIST`."""
    register(FashionMNIST)
