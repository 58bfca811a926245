"""``moebench init-plugin NAME``: write a pip-installable plugin package that passes the kit.

The package has a ``pyproject.toml`` registering the plugin under the ``moebench`` entry-point
group, one module with a working component (an EM algorithm, a seeded dataset or a metric), a
README and ``tests/test_conformance.py`` running :mod:`moebench.testing`. Install it with
``pip install -e ./moebench-NAME`` and it shows up in ``moebench plugins``.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template
from typing import Literal

from .errors import MoebenchError

Kind = Literal["algorithm", "dataset", "metric"]
KINDS: tuple[str, ...] = ("algorithm", "dataset", "metric")

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")

PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$summary (a moebench plugin)"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["moebench"]

[project.optional-dependencies]
test = ["pytest"]

# moebench finds plugins through this entry-point group: "<plugin name> = <module>".
[project.entry-points.moebench]
$name = "$module"

[tool.setuptools]
packages = ["$module"]
''')

README = Template('''\
# $dist

$summary: a moebench $kind plugin, registered as `$name`.

```bash
pip install -e .            # in the environment where moebench is installed
moebench plugins            # lists "$name" as loaded
pip install pytest && pytest tests   # moebench's conformance kit
```

$usage

Edit `$module/__init__.py`; the contracts are in moebench's plugin guide (docs/plugins.md in its
repository) and in the docstrings of `moebench.$base`.
''')

USAGE = {
    "algorithm": Template('''In a suite:

```yaml
algorithms:
  - name: $name
    params: {tol: 1.0e-6}
```'''),
    "dataset": Template('''In a suite:

```yaml
datasets:
  - name: $name
    params: {n: 1000, d: 5}
```'''),
    "metric": Template('''In a suite:

```yaml
metrics: [train_nll, $name]
```'''),
}

ALGORITHM = Template('''\
"""$summary."""

from __future__ import annotations

import torch
from pydantic import Field

import moebench
from moebench import Iterate
from moebench.api import GateOptions, SupportsEM, relative_decrease


class $cls(moebench.Algorithm):
    """EM: E-step and M-step of the model family until the NLL stalls.

    Contract (checked by moebench.testing.check_algorithm): report iteration 0 before the first
    step and 1, 2, ... after every step; the objective is a Python float (here the training NLL);
    never modify ``init`` or a reported tensor; return as soon as the callback returns False;
    return the final parameters (the cell's metrics use them); returning by yourself means
    "converged" (status done).
    """

    name = "$name"
    summary = "$summary"

    class Params(moebench.Params):
        tol: float = Field(1e-8, ge=0, description="stop when the relative NLL decrease falls "
                           "below tol (0: never)")
        gate_ridge: float = Field(1e-6, gt=0, description="ridge of the gate M-step")

    def unsupported_reason(self, model: moebench.Model) -> str | None:
        if not isinstance(model, SupportsEM):
            return f"{self.name} needs a model family with an M-step; {model.name!r} has none"
        return None

    @torch.no_grad()
    def fit(self, problem: moebench.Problem, init: moebench.ParamDict,
            callback: moebench.Callback) -> moebench.ParamDict:
        model, X, y = problem.model, problem.X, problem.y
        gate = GateOptions(ridge=self.params.gate_ridge)
        params = {k: v.clone() for k, v in init.items()}  # never modify init
        nll = float(model.nll(params, X, y))
        if not callback(Iterate(0, params, objective=nll)):
            return params
        t = 0
        while True:
            t += 1
            params, extras = model.em_step(X, y, params, gate)  # new tensors every step
            extras.pop("nll", None)
            new_nll = float(model.nll(params, X, y))
            extras = {k: float(v) for k, v in extras.items()}
            if not callback(Iterate(t, params, objective=new_nll, extras=extras)):
                return params
            if not new_nll < float("inf") or relative_decrease(nll, new_nll) < self.params.tol:
                return params
            nll = new_nll


@moebench.hookimpl
def register_algorithms(register):
    register($cls)
''')

DATASET = Template('''\
"""$summary."""

from __future__ import annotations

import numpy as np
from pydantic import Field

import moebench


class $cls(moebench.Dataset):
    """Inputs ``x ~ N(0, I_d)``; a softmax gate picks one of ``k`` linear experts; Gaussian noise.

    The same seed gives the same arrays (checked by moebench.testing.check_dataset).
    """

    name = "$name"
    summary = "$summary"
    task = "regression"

    class Params(moebench.Params):
        n: int = Field(1000, ge=10, description="training samples")
        n_test: int = Field(200, ge=1, description="test samples")
        d: int = Field(5, ge=1, description="input dimension")
        k: int = Field(2, ge=1, description="number of experts")
        sigma: float = Field(0.3, gt=0, description="noise standard deviation")

    def load(self, seed: int) -> moebench.Data:
        p = self.params
        rng = np.random.default_rng(seed)  # every random choice from the seed
        A = rng.normal(size=(p.k, p.d)) / np.sqrt(p.d)
        W = rng.normal(size=(p.k, p.d))
        W -= W[-1]  # the regression-moe layout keeps the last gate row at zero
        X = rng.normal(size=(p.n + p.n_test, p.d))
        logits = X @ W.T
        prob = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        z = (prob.cumsum(axis=1) > rng.random((X.shape[0], 1))).argmax(axis=1)
        y = np.einsum("nd,nd->n", X, A[z]) + p.sigma * rng.normal(size=X.shape[0])
        return moebench.Data(
            X_train=X[: p.n], y_train=y[: p.n], X_test=X[p.n :], y_test=y[p.n :],
            task="regression",
            model=moebench.ModelSpec("regression-moe", {"k": p.k, "sigma": p.sigma}),
            truth={"A": A, "W": W, "log_sigma": np.full(p.k, np.log(p.sigma))},
            meta={"source": "$dist (synthetic)"},
        )


@moebench.hookimpl
def register_datasets(register):
    register($cls)
''')

METRIC = Template('''\
"""$summary."""

from __future__ import annotations

import moebench


class $cls(moebench.Metric):
    """Mean absolute error of the predicted mean ``E[y | x]`` on the test split.

    ``uses_test``: absent (NaN) on data without a test split (checked by
    moebench.testing.check_metric).
    """

    name = "$name"
    summary = "$summary"
    direction = "min"  # lower is better
    tasks = ("regression",)
    uses_test = True

    def compute(self, ctx: moebench.EvalContext) -> float:
        prediction = ctx.model.predict(ctx.params, ctx.X_test)
        return float((ctx.y_test - prediction).abs().mean())


@moebench.hookimpl
def register_metrics(register):
    register($cls)
''')

TESTS = {
    "algorithm": Template('''\
"""moebench's conformance kit on $name."""

from moebench.testing import check_algorithm


def test_conformance():
    assert check_algorithm("$name")
'''),
    "dataset": Template('''\
"""moebench's conformance kit on $name."""

from moebench.testing import check_dataset


def test_conformance():
    assert check_dataset("$name", {"n": 200, "n_test": 50})
'''),
    "metric": Template('''\
"""moebench's conformance kit on $name."""

from moebench.testing import check_metric


def test_conformance():
    assert check_metric("$name")
'''),
}

SOURCES = {"algorithm": ALGORITHM, "dataset": DATASET, "metric": METRIC}
SUMMARIES = {"algorithm": "EM until the NLL stalls", "dataset": "a seeded synthetic MoE "
             "regression dataset", "metric": "mean absolute error on the test split"}
BASES = {"algorithm": "Algorithm", "dataset": "Dataset", "metric": "Metric"}


def package_name(name: str) -> tuple[str, str]:
    """The distribution and module names of plugin ``name``: ``moebench-NAME``,
    ``moebench_NAME`` (hyphens as underscores)."""
    return f"moebench-{name}", "moebench_" + name.replace("-", "_")


def init_plugin(name: str, kind: Kind = "algorithm", directory: Path | str = ".") -> Path:
    """Write the package of a new plugin into ``directory/moebench-NAME``.

    Parameters
    ----------
    name
        The component's (and entry point's) name: lower-case letters, digits and single
        hyphens, starting with a letter. A metric's name must be a valid suite metric name.
    kind
        ``algorithm``, ``dataset`` or ``metric``.
    directory
        Where to create the package folder.

    Returns
    -------
    Path
        The package folder.

    Raises
    ------
    MoebenchError
        An invalid name or kind, or a folder that exists already.
    """
    if kind not in KINDS:
        raise MoebenchError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if not _NAME.fullmatch(name):
        raise MoebenchError(f"invalid plugin name {name!r}: use lower-case letters, digits and "
                            "single hyphens, starting with a letter (e.g. 'restart-em')")
    dist, module = package_name(name)
    if kind == "metric":
        name = name.replace("-", "_")  # metric names are identifiers in suites and tables
    root = Path(directory) / dist
    if root.exists():
        raise MoebenchError(f"{root} exists already; choose another name or directory")
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    values = {"name": name, "dist": dist, "module": module, "cls": cls, "kind": kind,
              "summary": SUMMARIES[kind], "base": BASES[kind]}
    values["usage"] = USAGE[kind].substitute(values)
    files = {
        "pyproject.toml": PYPROJECT.substitute(values),
        "README.md": README.substitute(values),
        f"{module}/__init__.py": SOURCES[kind].substitute(values),
        "tests/test_conformance.py": TESTS[kind].substitute(values),
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
