"""The conformance kit, run over every registered algorithm, on every model family it fits
and every available device (the convergence check on the default problem only, to keep CI
short), and over every dataset; plus deliberately broken plugins, each caught by its check with
a message that says what to change."""

from __future__ import annotations

import pytest

from moebench import plugins
from moebench.errors import UnsupportedProblem
from moebench.testing import DEFAULT_DATASET, algorithm_checks

DATASETS = [
    DEFAULT_DATASET,
    ("symmoline", {"n": 300, "n_test": 50, "d": 4}),
    ("symmologe", {"n": 300, "n_test": 50, "d": 4}),
    ("synthetic-logistic-moe", {"n": 300, "n_test": 50, "d": 4, "k": 2, "n_classes": 3}),
]


def _cases():
    cases, families = [], {}
    for name in plugins.components("algorithms"):
        for dataset in DATASETS:
            try:
                checks = list(algorithm_checks(name, dataset=dataset))
            except UnsupportedProblem:
                continue
            families.setdefault(name, []).append(dataset[0])
            cases += [pytest.param(check, id=f"{name}-{dataset[0]}-{check_id}")
                      for check_id, check in checks
                      if dataset == DEFAULT_DATASET or "convergence" not in check_id]
    return cases, families


CASES, FAMILIES = _cases()


@pytest.mark.parametrize("check", CASES)
def test_algorithm_conforms(check):
    check()


def test_every_algorithm_is_checked_on_the_families_it_fits():
    assert set(FAMILIES) >= {"tensor-em", "joint-em", "mirror-em", "gradient-em", "gd",
                             "linear-regression"}
    assert set(FAMILIES["tensor-em"]) == {"synthetic-moe"}
    assert set(FAMILIES["linear-regression"]) == {"synthetic-moe"}
    for name in ("joint-em", "mirror-em", "gradient-em", "gd"):
        assert set(FAMILIES[name]) == {d for d, _ in DATASETS}, name


# ------------------------------------------------------------------ broken algorithms

import math  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402

import moebench  # noqa: E402
from moebench import Algorithm, Iterate  # noqa: E402
from moebench.api import GateOptions  # noqa: E402
from moebench.testing import (  # noqa: E402
    ConvergenceCheckSkipped,
    check_algorithm,
    check_dataset,
    dataset_checks,
)


class GoodEM(Algorithm):
    """A correct EM loop; each subclass below breaks exactly one contract."""

    name = "good-em"

    class Params(moebench.Params):
        tol: float = Field(1e-4, ge=0, description="relative NLL decrease that stops")

    def start(self, problem, init):
        return {k: v.clone() for k, v in init.items()}

    def step(self, problem, params):
        new, _ = problem.model.em_step(problem.X, problem.y, params, GateOptions())
        return new

    def report(self, t, params, nll):
        return Iterate(t, params, objective=nll, extras={"step": 1.0})

    def converged(self, old, new):
        return (old - new) / abs(old) < self.params.tol

    def fit(self, problem, init, callback):
        model = problem.model
        params = self.start(problem, init)
        nll = float(model.nll(params, problem.X, problem.y))
        if not callback(self.report(0, params, nll)):
            return params
        t = 0
        while True:
            t += 1
            params = self.step(problem, params)
            new = float(model.nll(params, problem.X, problem.y))
            if not callback(self.report(t, params, new)):
                return params
            if self.converged(nll, new):
                return params
            nll = new


class TensorObjective(GoodEM):
    def report(self, t, params, nll):
        return Iterate(t, params, objective=torch.tensor(nll), extras={"step": 1.0})


class NaNObjective(GoodEM):
    def report(self, t, params, nll):
        return Iterate(t, params, objective=math.nan if t else nll)


class TensorExtras(GoodEM):
    def report(self, t, params, nll):
        return Iterate(t, params, objective=nll, extras={"step": torch.tensor(1.0)})


class StartsAtOne(GoodEM):
    def report(self, t, params, nll):
        return Iterate(t + 1, params, objective=nll)


class IgnoresStop(GoodEM):
    def fit(self, problem, init, callback):
        params = self.start(problem, init)
        for t in range(8):
            callback(self.report(t, params, 1.0))
            params = self.step(problem, params)
        return params


class KeepsComputing(GoodEM):
    def fit(self, problem, init, callback):
        params = self.start(problem, init)
        t = 0
        while callback(self.report(t, params, float(problem.model.nll(params, problem.X,
                                                                        problem.y)))):
            params = self.step(problem, params)
            t += 1
        for _ in range(5):  # "one last polish" after being told to stop
            params = self.step(problem, params)
        return params


class NeverConverges(GoodEM):
    def converged(self, old, new):
        return False


class ModifiesInit(GoodEM):
    def start(self, problem, init):
        return init

    def step(self, problem, params):
        new = super().step(problem, params)
        for k in params:
            params[k].copy_(new[k])
        return params


class ModifiesReported(ModifiesInit):
    def start(self, problem, init):
        return {k: v.clone() for k, v in init.items()}


class GlobalRandomness(GoodEM):
    def start(self, problem, init):
        params = {k: v.clone() for k, v in init.items()}
        params["A"] = params["A"] + 1e-3 * torch.randn(params["A"].shape, dtype=params["A"].dtype)
        return params


class HardCodedDtype(GoodEM):
    def report(self, t, params, nll):
        return Iterate(t, {k: v.double() for k, v in params.items()}, objective=nll)


class ReturnsNothing(GoodEM):
    def fit(self, problem, init, callback):
        super().fit(problem, init, callback)


BROKEN = [
    (TensorObjective, "check_callback_types", r"objective at iteration 0 is a torch\.Tensor.*"
     r"float\(loss\.detach\(\)\)"),
    (NaNObjective, "check_callback_types", r"objective at iteration 1 is nan: report a finite"),
    (TensorExtras, "check_callback_types", r"extras\['step'\] at iteration 0 is a torch\.Tensor"),
    (StartsAtOne, "check_reports_initial_point_and_counts", r"must report iteration 0"),
    (IgnoresStop, "check_respects_max_iter", r"reported 3 more iteration\(s\): return from fit"),
    (KeepsComputing, "check_respects_max_iter", r"more call\(s\) of the model's methods"),
    (ModifiesInit, "check_does_not_modify_init", r"modified the init .* copy it first"),
    (ModifiesReported, "check_does_not_modify_reported_params",
     r"reported at iteration \d was modified after it was reported"),
    (GlobalRandomness, "check_deterministic", r"problem\.generator"),
    (HardCodedDtype, "check_device_dtype_roundtrip", r"torch\.float32, the reported at iteration "
     r"0 parameter 'A' is torch\.float64"),
    (ReturnsNothing, "check_result_shapes", r"fit returned NoneType: return the final parameters"),
    (NeverConverges, "check_returns_on_own_convergence", r"still iterating after 20 iterations"),
]


def test_a_correct_algorithm_passes_every_check():
    passed = check_algorithm(GoodEM)
    assert {p.split("[")[0] for p in passed} >= {
        "check_callback_types", "check_returns_on_own_convergence", "check_does_not_modify_init",
        "check_does_not_modify_reported_params", "check_device_dtype_roundtrip"}


@pytest.mark.parametrize(("cls", "check", "message"), BROKEN,
                         ids=[cls.__name__ for cls, _, _ in BROKEN])
def test_each_broken_algorithm_fails_its_check_with_what_to_change(cls, check, message,
                                                                   monkeypatch):
    monkeypatch.setattr("moebench.testing.algorithms.MAX_CONVERGENCE_ITER", 20)  # (the test's time)
    with pytest.raises(AssertionError) as info:
        check_algorithm(cls)
    text = str(info.value)
    assert text.startswith(f"good-em: {check}["), text
    assert __import__("re").search(message, text), text


# ------------------------------------------------------------------ datasets


#: Parameters for datasets that need some (or are slow to load whole).
DATASET_PARAMS = {"uci-gal": {"name": "yacht"},
                  "fashion-mnist": {"variant": "moe2", "n_train": 2000, "n_test": 500},
                  "cifar10": {"n_train": 2000, "n_test": 500}}


def _first_party_datasets():
    cases = []
    for name in plugins.components("datasets"):
        if name == "table":
            continue  # needs a file: tested below with one
        cases.append(pytest.param(name, id=name))
    return cases


@pytest.mark.parametrize("name", _first_party_datasets())
def test_first_party_datasets_conform(name):
    from moebench.errors import DataUnavailable

    try:
        assert len(check_dataset(name, DATASET_PARAMS.get(name))) == 4
    except DataUnavailable as exc:
        pytest.skip(f"data not on this machine: {exc}")


def test_table_conforms(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "t.csv"
    X = rng.normal(size=(60, 3))
    np.savetxt(path, np.column_stack([X, X @ [1.0, -1.0, 0.5]]), delimiter=",",
               header="a,b,c,y", comments="")
    assert len(check_dataset("table", {"path": str(path), "target": "y"})) == 4
    assert len(check_dataset("table", {"path": str(path), "target": "y",
                                       "test_fraction": 0})) == 4


class GoodData(moebench.Dataset):
    """Seeded regression data; each subclass below breaks one contract."""

    name = "good-data"

    def arrays(self, seed):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(80, 3))
        y = X @ np.array([1.0, -1.0, 0.5]) + 0.1 * rng.normal(size=80)
        return X[:60], y[:60], X[60:], y[60:]

    def load(self, seed):
        X, y, Xt, yt = self.arrays(seed)
        return moebench.Data(X, y, Xt, yt, "regression",
                             moebench.ModelSpec("regression-moe", {"k": 2}))


class IntegerInputs(GoodData):
    def arrays(self, seed):
        X, y, Xt, yt = super().arrays(seed)
        return (X * 10).astype(int), y, (Xt * 10).astype(int), yt


class UnseededData(GoodData):
    def arrays(self, seed):
        return super().arrays(int(np.random.default_rng().integers(1 << 30)))


class OverlappingSplits(GoodData):
    def arrays(self, seed):
        X, y, _, _ = super().arrays(seed)
        return X, y, X.copy(), y.copy()


class NaNInputs(GoodData):
    def arrays(self, seed):
        X, y, Xt, yt = super().arrays(seed)
        X[3, 1] = np.nan
        return X, y, Xt, yt


class UnknownModel(GoodData):
    def load(self, seed):
        X, y, Xt, yt = self.arrays(seed)
        return moebench.Data(X, y, Xt, yt, "regression", moebench.ModelSpec("no-such-model"))


BROKEN_DATA = [
    (IntegerInputs, "check_dataset_arrays", r"X_train has dtype int64: give float inputs"),
    (UnseededData, "check_dataset_deterministic", r"derive every random choice from the seed"),
    (OverlappingSplits, "check_dataset_train_test_separated", r"100% of the test rows also occur"),
    (NaNInputs, "check_dataset_arrays", r"invalid data: X_train contains 1 NaN"),
    (UnknownModel, "check_dataset_model", r"'no-such-model', which is not a registered model"),
]


def test_a_correct_dataset_passes():
    assert [c for c, _ in dataset_checks(GoodData)] == check_dataset(GoodData)


@pytest.mark.parametrize(("cls", "check", "message"), BROKEN_DATA,
                         ids=[cls.__name__ for cls, _, _ in BROKEN_DATA])
def test_each_broken_dataset_fails_its_check(cls, check, message):
    with pytest.raises(AssertionError) as info:
        check_dataset(cls)
    text = str(info.value)
    assert text.startswith(f"good-data: {check}: "), text
    assert __import__("re").search(message, text), text


# ------------------------------------------------------------------ metrics


@pytest.mark.parametrize("name", list(plugins.components("metrics")))
def test_first_party_metrics_conform(name):
    from moebench.testing import check_metric

    assert len(check_metric(name)) == 3


class ReadsTestUnannounced(moebench.Metric):
    """Reads the test split without saying so (not named test_*, no uses_test)."""

    name = "holdout_error"

    def compute(self, ctx):
        return float((ctx.y_test - ctx.model.predict(ctx.params, ctx.X_test)).square().mean())


def test_a_metric_reading_the_test_split_unannounced_fails():
    from moebench.testing import check_metric

    with pytest.raises(AssertionError, match=r"holdout_error: check_metric_without_test_split: "
                       r"without a test split the metric is nan: .* set uses_test = True"):
        check_metric(ReadsTestUnannounced)


class NoTol(GoodEM):
    """Stops after a fixed number of steps: no ``tol`` for the kit to switch on."""

    class Params(moebench.Params):
        steps: int = Field(3, ge=1, description="EM steps")

    def converged(self, old, new):
        return False


def test_the_kit_says_when_it_cannot_check_convergence():
    with pytest.warns(ConvergenceCheckSkipped, match="no `tol` parameter and no converge_par"):
        names = [name for name, _ in algorithm_checks(NoTol)]
    assert not any(n.startswith("check_returns_on_own_convergence") for n in names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceCheckSkipped)
        names = [name for name, _ in algorithm_checks(GoodEM)]
    assert any(n.startswith("check_returns_on_own_convergence") for n in names)
