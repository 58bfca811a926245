"""The plugin author's API: ``moebench.plugins`` on import, reentrant loading, the stable
``moebench.api`` names, ``Problem.init_spec``, the enforced callback contract, per-algorithm
budgets and ``table`` without a test split (issue 14, "What went wrong")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import fake_distribution

from moebench import plugins
from moebench.errors import PluginError
from moebench.reports.results import read_results
from moebench.runner import run_suite
from moebench.suite import parse_suite, resolve

ROOT = Path(__file__).resolve().parents[2]

REUSE = '''
    import moebench
    from moebench import hookimpl

    # at import time, while plugins are loading: must not hang (first-party ones are loaded)
    JointEM = moebench.plugins.get("algorithms", "joint-em")


    class RestartEM(JointEM):
        name = "reuse-joint-em"
        summary = "joint-em, fetched from the registry at import time"


    @hookimpl
    def register_algorithms(register):
        # and inside a register hook
        base = moebench.plugins.get("algorithms", "gd")
        register(RestartEM)
        register(type("ReuseGD", (base,), {"name": "reuse-gd"}))
'''

LATER = '''
    import moebench
    from moebench import hookimpl

    # a component of a third-party plugin that sorts later ("zz-provider"): loaded on demand
    Provided = moebench.plugins.get("algorithms", "provided-alg")


    @hookimpl
    def register_algorithms(register):
        register(type("Wrapped", (Provided,), {"name": "wrapped-alg"}))
'''

PROVIDER = '''
    from moebench import Algorithm, hookimpl
    from moebench.algorithm import Iterate


    class Provided(Algorithm):
        name = "provided-alg"

        def fit(self, problem, init, callback):
            callback(Iterate(0, init))
            return init


    @hookimpl
    def register_algorithms(register):
        register(Provided)
'''

MISSING = '''
    import moebench

    moebench.plugins.get("algorithms", "no-such-algorithm")
'''

CONTRACTS = '''
    import torch
    from pydantic import Field
    from moebench import Algorithm, Params, hookimpl
    from moebench.algorithm import Iterate


    class Misnumbered(Algorithm):
        """Reports 0, 2, 4, ...: max_iter would never be reached."""
        name = "misnumbered"

        def fit(self, problem, init, callback):
            t = 0
            while callback(Iterate(t, init, objective=1.0)):
                t += 2
            return init


    class ReturnsNone(Algorithm):
        name = "returns-none"

        def fit(self, problem, init, callback):
            callback(Iterate(0, init, objective=1.0))


    class ReturnsOther(Algorithm):
        """Reports the initial point, returns a far-away one: final metrics use the latter."""
        name = "returns-other"

        def fit(self, problem, init, callback):
            callback(Iterate(0, init))
            return {k: v + 3.0 if k != "log_sigma" else v.clone() for k, v in init.items()}


    class InitProbe(Algorithm):
        """Reports what Problem.init_spec says and draws restarts with draw_init."""
        name = "init-probe"

        class Params(Params):
            restarts: int = Field(2, ge=1, description="starting points drawn")

        def fit(self, problem, init, callback):
            spec = problem.init_spec
            starts = [problem.draw_init() for _ in range(self.params.restarts)]
            extras = {"scale": spec.scale, "radius": spec.radius,
                      "near_truth": float(spec.scheme == "near-truth"),
                      "start_gap": float((starts[0]["A"] - starts[1]["A"]).norm())}
            t = 0
            while callback(Iterate(t, starts[0], extras=extras)):
                t += 1
            return starts[0]


    @hookimpl
    def register_algorithms(register):
        for cls in (Misnumbered, ReturnsNone, ReturnsOther, InitProbe):
            register(cls)
'''


def _site(tmp_path: Path, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    return fake_distribution(tmp_path / "site", "mb-api-plugins", modules, entry_points)


@pytest.fixture
def reentrant_site(tmp_path, monkeypatch, fresh_plugins):
    site = _site(tmp_path, {"mb_api_reuse": REUSE, "mb_api_later": LATER,
                            "mb_api_provider": PROVIDER, "mb_api_missing": MISSING},
                 {"api-reuse": "mb_api_reuse", "api-later": "mb_api_later",
                  "zz-provider": "mb_api_provider", "api-missing": "mb_api_missing"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    return site


@pytest.fixture
def contract_site(tmp_path, monkeypatch, fresh_plugins):
    site = _site(tmp_path, {"mb_api_contracts": CONTRACTS}, {"api-contracts": "mb_api_contracts"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    return site


def _cli(*args: str, site: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "moebench.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


# ------------------------------------------------------------------ import and reentrancy


def test_import_moebench_exposes_plugins_api_and_testing():
    code = ("import moebench; print(moebench.plugins.get('algorithms', 'joint-em').name); "
            "print(moebench.api.JointEM.name, moebench.testing.check_algorithm.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["joint-em", "joint-em", "check_algorithm"]


def test_get_during_plugin_loading_works_or_fails_at_once(reentrant_site):
    infos = {p.name: p for p in plugins.plugin_infos()}
    assert infos["api-reuse"].status == "loaded", infos["api-reuse"].error
    assert infos["api-reuse"].registered == {"algorithms": ["reuse-joint-em", "reuse-gd"]}
    # a later plugin's component is loaded on demand, and registered once
    assert infos["api-later"].status == "loaded", infos["api-later"].error
    assert infos["zz-provider"].status == "loaded"
    algorithms = plugins.components("algorithms")
    assert {"reuse-joint-em", "reuse-gd", "wrapped-alg", "provided-alg"} <= set(algorithms)
    assert issubclass(algorithms["reuse-joint-em"], algorithms["joint-em"])
    # a name no plugin provides fails that plugin at once, saying what to do
    assert infos["api-missing"].status == "failed"
    error = infos["api-missing"].error
    assert "'no-such-algorithm' is not registered (yet)" in error
    assert "moebench.api" in error and "inside fit()" in error
    with pytest.raises(PluginError, match="valid names"):
        plugins.get("algorithms", "no-such-algorithm")


def test_cli_list_does_not_hang_when_a_plugin_calls_get(reentrant_site):
    listed = _cli("list", "algorithms", "--json", site=reentrant_site, timeout=120)
    assert listed.returncode == 0, listed.stderr
    names = {a["name"] for a in json.loads(listed.stdout)}
    assert {"reuse-joint-em", "reuse-gd", "wrapped-alg", "joint-em"} <= names


# ------------------------------------------------------------------ the stable public API

#: The names moebench.api promises (docs/plugins.md, "Reusing first-party components").
#: Removing one is a breaking change: this list only grows.
STABLE_API = {
    "Algorithm", "Callback", "Data", "DataError", "DataUnavailable", "Dataset", "EvalContext",
    "InitSpec", "Iterate", "Metric", "Model", "ModelSpec", "ParamDict", "Params", "Problem",
    "UnsupportedProblem", "hookimpl",
    "DeepMoE", "GateOptions", "LogisticMoE", "RegressionMoE", "SupportsEM", "SymMoLinE",
    "SymMoLogE",
    "EMParams", "GradientDescent", "JointEM", "JointEMParams", "MirrorEM", "MirrorEMParams",
    "TensorEM", "TensorEMParams", "relative_decrease", "run_em",
    "fit_softmax_gate", "open_npz_memmap", "open_parquet", "permuted_error", "project_rows",
}


def test_public_api_names_do_not_disappear():
    import moebench.api as api

    missing = sorted(STABLE_API - set(api.__all__))
    assert not missing, f"moebench.api lost public name(s) {missing}: that breaks plugins"
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    # the registered components are the public classes
    assert plugins.get("algorithms", "joint-em") is api.JointEM
    assert plugins.get("algorithms", "mirror-em") is api.MirrorEM
    assert plugins.get("models", "regression-moe") is api.RegressionMoE
    assert api.JointEM.Params is api.JointEMParams


def test_public_api_is_documented_in_the_guide():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    import moebench.api as api

    undocumented = [n for n in api.__all__ if f"`{n}`" not in guide]
    assert not undocumented, f"docs/plugins.md does not mention {undocumented}"


# ------------------------------------------------------------------ runner-side contracts

SUITE = """
name: api-test
seed: 3
repetitions: 1
init: {scheme: random, scale: 0.7}
budget: {max_iter: 4, timeout: 30}
metrics: [train_nll, test_mse]
experiments:
  - name: synth
    datasets:
      - name: synthetic-moe
        params: {n: 300, n_test: 60, d: 3, k: 2, sigma: 0.3}
    algorithms:
      - name: joint-em
        params: {tol: 0}
      - name: joint-em
        label: joint-em-long
        params: {tol: 0}
        budget: {max_iter: 7}
      - name: misnumbered
      - name: returns-none
      - name: returns-other
      - name: init-probe
      - name: tensor-em
        label: refine-never
        params: {refine: true, tol: 0, gate_max_iter: null}
      - name: tensor-em
        label: refine-split
        params: {refine: true, tol: 0, gate_max_iter: 2}
  - name: near
    init: {scheme: near-truth, radius: 0.25}
    datasets:
      - name: synthetic-moe
        params: {n: 300, n_test: 60, d: 3, k: 2, sigma: 0.3}
    algorithms:
      - name: init-probe
  - name: all-rows
    metrics: [train_nll, test_mse, test_nll]
    leaderboard: {rank_by: train_nll}
    datasets:
      - name: table
        params: {path: TABLE, target: y, test_fraction: 0}
    algorithms:
      - name: joint-em
"""


@pytest.fixture
def table_file(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    frame["y"] = np.where(frame.a > 0, 2 * frame.b, -frame.b) + 0.1 * rng.normal(size=80)
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    return path


def test_per_algorithm_budget_resolves_and_keeps_seeds(contract_site, table_file):
    from moebench.cell.spec import cell_fields, expand_cells

    suite = parse_suite(SUITE.replace("TABLE", str(table_file)))
    exps = resolve(suite)
    synth = exps[0]
    by_id = {v.id: v for v in synth.algorithms}
    assert synth.budget_for(by_id["joint-em"]).max_iter == 4
    long = synth.budget_for(by_id["joint-em-long"])
    assert (long.max_iter, long.timeout) == (7, 30)  # merged over the experiment's budget
    cells = {c.algorithm.id: c for c in expand_cells(suite.name, suite.seed, [synth], "cpu",
                                                     None)}
    a, b = cell_fields(cells["joint-em"]), cell_fields(cells["joint-em-long"])
    assert a["data_seed"] == b["data_seed"] and a["init_seed"] == b["init_seed"]
    assert a["key"] != b["key"]
    # a cell without its own budget keeps the key it had before budgets per algorithm existed
    plain = parse_suite(SUITE.replace("TABLE", str(table_file))
                        .replace("        budget: {max_iter: 7}\n", ""))
    again = {c.algorithm.id: c for c in expand_cells(plain.name, plain.seed, [resolve(plain)[0]],
                                                     "cpu", None)}
    assert again["joint-em"].key == cells["joint-em"].key
    # under --quick a quick budget applies to every algorithm
    quick = parse_suite(SUITE.replace("TABLE", str(table_file))
                        .replace("repetitions: 1\n", "repetitions: 1\nquick: {budget: "
                                 "{max_iter: 1}}\n"))
    fast = resolve(quick, quick=True)[0]
    assert {fast.budget_for(v).max_iter for v in fast.algorithms} == {1}


def test_runner_enforces_the_callback_contract(contract_site, table_file, tmp_path):
    suite = parse_suite(SUITE.replace("TABLE", str(table_file)))
    directory = run_suite(suite, tmp_path / "out")
    frame = read_results(directory)
    fin = frame[frame["record"] == "final"].set_index(["experiment", "algorithm"])
    iters = frame[frame["record"] == "iteration"]

    # per-algorithm budget: 7 iterations instead of 4, same data and start
    assert fin.loc[("synth", "joint-em"), "status"] == "max_iter"
    assert fin.loc[("synth", "joint-em"), "iteration"] == 4
    assert fin.loc[("synth", "joint-em-long"), "iteration"] == 7
    first = iters[(iters["iteration"] == 0) & (iters["experiment"] == "synth")] \
        .set_index("algorithm")
    assert first.loc["joint-em", "train_nll"] == first.loc["joint-em-long", "train_nll"]

    # iteration numbering, returned parameters
    bad = fin.loc[("synth", "misnumbered")]
    assert bad["status"] == "error"
    assert bad["message"] == ("Iterate.iteration must count 0, 1, 2, ... (one per report; restarts "
                              "keep counting): expected 1, the algorithm reported 2")
    none = fin.loc[("synth", "returns-none")]
    assert none["status"] == "error"
    assert none["message"] == ("fit must return the final parameters (a dict of tensors ['A', 'W', "
                               "'log_sigma']); it returned NoneType")
    other = fin.loc[("synth", "returns-other")]
    assert other["status"] == "done"
    reported = iters[iters["algorithm"] == "returns-other"]["train_nll"].iloc[-1]
    assert other["train_nll"] != pytest.approx(reported)  # final metrics: returned params

    # Problem.init_spec and draw_init follow the suite's init
    probe = iters[(iters["algorithm"] == "init-probe")].set_index("experiment")
    assert probe.loc["synth", "extra.scale"].iloc[0] == pytest.approx(0.7)
    assert probe.loc["synth", "extra.start_gap"].iloc[0] > 0
    assert probe.loc["near", "extra.near_truth"].iloc[0] == 1.0
    assert probe.loc["near", "extra.radius"].iloc[0] == pytest.approx(0.25)

    # table with test_fraction 0: trains on every row, test metrics absent with a note
    rows = fin.loc[("all-rows", "joint-em")]
    assert rows["status"] == "max_iter", rows["message"]
    assert np.isfinite(rows["train_nll"])
    assert np.isnan(rows["test_mse"]) and np.isnan(rows["test_nll"])
    assert rows["message"] == ("no test split (the dataset trains on every row): test_mse, "
                               "test_nll absent")
    assert json.loads(rows["dataset_params"])["test_fraction"] == 0

    # tensor-em with refine: the budget is split between the phases, a phase that did not run
    # is said in the cell's message and in the final row's extras
    never = fin.loc[("synth", "refine-never")]
    assert never["status"] == "max_iter" and never["extra.joint"] == 0.0
    assert never["message"] == ("refine: joint EM did not run (gate EM used all 4 iterations the "
                                "budget left; lower gate_max_iter or raise max_iter)")
    split = fin.loc[("synth", "refine-split")]
    assert split["extra.joint"] == 1.0 and split["extra.gate_iters"] == 2.0
    assert pd.isna(split["message"])  # both phases ran: nothing to say


# ------------------------------------------------------------------ first-party surprises


def test_mirror_em_skip_names_the_families_with_a_mirror_step():
    from moebench.api import MirrorEM, RegressionMoE
    from moebench_plugins.algorithms.mirror_em import MIRROR_FAMILIES

    mirror = MirrorEM(MirrorEM.Params(eta=0.5))
    for activation in ("sigmoid", "relu"):
        model = RegressionMoE(RegressionMoE.Params(activation=activation), n_features=3)
        reason = mirror.unsupported_reason(model)
        assert reason is not None and f"not {activation!r} ones" in reason
        assert "implemented for: regression-moe with linear experts" in reason
        assert "logistic-moe, deep-moe, symmoline, symmologe" in reason
    # every family the message names does take mirror steps
    for name in ("regression-moe", "logistic-moe", "deep-moe", "symmoline", "symmologe"):
        assert name in MIRROR_FAMILIES
        cls = plugins.get("models", name)
        n_classes = {"logistic-moe": 3, "deep-moe": 3, "symmologe": 2}.get(name)
        model = cls(cls.Params(), n_features=3, n_classes=n_classes)
        assert mirror.unsupported_reason(model) is None, name
