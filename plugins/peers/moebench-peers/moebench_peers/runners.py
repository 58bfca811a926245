"""Run the peers on given arrays: flexmix through ``Rscript``, cgmm in-process."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PeerResult", "cgmm_available", "cgmm_fit", "flexmix_available", "flexmix_fit"]

_R_SCRIPT = Path(__file__).with_name("flexmix_fit.R")


@dataclass
class PeerResult:
    """Outcome of a peer's fit.

    Attributes
    ----------
    seconds
        Wall-clock time of the EM iterations (R's own clock for flexmix: no start-up, no I/O).
    iterations
        EM iterations run.
    loglik
        Final total log-likelihood ``sum_n log p(y_n | x_n)`` as the peer reports it.
    """

    seconds: float
    iterations: int
    loglik: float
    params: dict[str, np.ndarray] | None = None

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations, 1)


def flexmix_available() -> str | None:
    """``None`` if ``Rscript`` with flexmix and nnet is installed, else why not."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return ("flexmix needs R: apt-get install r-base-core r-cran-flexmix r-cran-nnet "
                "(Rscript not found)")
    probe = subprocess.run(
        [rscript, "-e", "suppressPackageStartupMessages({library(flexmix); library(nnet)})"],
        capture_output=True, text=True,
    )
    if probe.returncode != 0:
        return f"R is installed but flexmix/nnet are not: {probe.stderr.strip()[-200:]}"
    return None


def flexmix_fit(X: np.ndarray, y: np.ndarray, R0: np.ndarray, iterations: int) -> PeerResult:
    """EM with flexmix from the start posteriors ``R0`` for exactly ``iterations`` iterations.

    The model is moebench's ``regression-moe`` with ``noise=per_expert`` and no intercept:
    experts ``y ~ 0 + x`` with their own sigma, gate ``~ 0 + x`` (multinomial logit, fitted by
    ``nnet::multinom``), ``minprior = 0`` so that no component is dropped.
    """
    with tempfile.TemporaryDirectory() as tmp:
        data, init, out = Path(tmp, "data.csv"), Path(tmp, "init.csv"), Path(tmp, "out.txt")
        np.savetxt(data, np.column_stack([X, y]), delimiter=",", fmt="%.17g")
        np.savetxt(init, R0, delimiter=",", fmt="%.17g")
        subprocess.run(["Rscript", str(_R_SCRIPT), str(data), str(init), str(iterations),
                        str(out)], check=True, capture_output=True, text=True)
        fields = dict(line.split(" ", 1) for line in out.read_text().splitlines())
    k, d = R0.shape[1], X.shape[1]
    # parameters(fit): (d + 1) x k, coefficients then sigma; concomitant: d x k, column 1 zero.
    experts = np.array(fields["experts"].split(), dtype=float).reshape(k, d + 1)
    gate = np.array(fields["gate"].split(), dtype=float).reshape(k, d)
    W = gate - gate[-1]
    params = {"A": experts[:, :d], "W": W, "log_sigma": np.log(experts[:, d])}
    return PeerResult(seconds=float(fields["elapsed"]), iterations=int(fields["iterations"]),
                      loglik=float(fields["loglik"]), params=params)


def cgmm_available() -> str | None:
    """``None`` if the Python package cgmm is importable, else why not."""
    if importlib.util.find_spec("cgmm") is None:
        return "cgmm is not installed (pip install cgmm)"
    return None


def cgmm_fit(X: np.ndarray, y: np.ndarray, k: int, iterations: int, seed: int = 0) -> PeerResult:
    """cgmm's ``MixtureOfExpertsRegressor`` for ``iterations`` EM iterations (``tol = 0``).

    cgmm's model differs from moebench's: affine experts and gate (intercepts), a gate penalty
    (``gating_penalty``, set to 1e-6 here) and its own k-means initialisation, so its
    log-likelihood is reported for reference, not matched.
    """
    from cgmm import MixtureOfExpertsRegressor

    est = MixtureOfExpertsRegressor(n_components=k, max_iter=iterations, tol=0.0,
                                    gating_penalty=1e-6, random_state=seed)
    t0 = time.perf_counter()
    est.fit(X, y[:, None])
    seconds = time.perf_counter() - t0
    n_iter = int(getattr(est, "n_iter_", iterations))
    loglik = float(est.score(X, y[:, None]) * X.shape[0])
    return PeerResult(seconds=seconds, iterations=n_iter, loglik=loglik)
