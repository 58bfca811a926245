"""moebench's joint EM next to flexmix (R) and cgmm on the same data and initialisation.

Usage::

    python -m benchmarks.compare_peers --n 100000 --k 4 --d 10 --iterations 20

Needs the optional package ``plugins/peers/moebench-peers`` (``pip install -e``) for the peers;
a peer whose software is missing is listed with the reason. Prints per-iteration times, their
ratios to moebench's, and the final log-likelihoods side by side. flexmix starts from the
posteriors of moebench's initialisation, so after the same number of iterations both must be at
the same point; moebench is also run to convergence (relative NLL decrease < 1e-12).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from moebench import InitSpec, Iterate, Problem
from moebench.seeding import torch_generator
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.datasets.synthetic import SyntheticMoE
from moebench_plugins.models.regression import RegressionMoE


def run_joint_em(model, X, y, init, iterations: int, tol: float = 0.0):
    """Joint EM for ``iterations`` iterations; returns (seconds, iterations run, total loglik)."""
    seen = []

    def callback(it: Iterate) -> bool:
        seen.append(it.objective)
        return it.iteration < iterations

    alg = JointEM(JointEM.Params(tol=tol, gate_ridge=1e-12, gate_steps=50))
    t0 = time.perf_counter()
    alg.fit(Problem(model, X, y, torch_generator(0)), init, callback)
    seconds = time.perf_counter() - t0
    return seconds, len(seen) - 1, -seen[-1] * X.shape[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--cgmm-iterations", type=int, default=5,
                    help="iterations for cgmm (seconds each at n = 1e5)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    data = SyntheticMoE(SyntheticMoE.Params(n=args.n, n_test=10, d=args.d, k=args.k, sigma=0.5,
                                            gating="generic")).load(args.seed)
    model = RegressionMoE(RegressionMoE.Params(k=args.k, noise="per_expert", sigma=1.0),
                          n_features=args.d)
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    init = model.init_params(InitSpec(), torch_generator(args.seed))
    T = args.iterations
    print(f"n={args.n} k={args.k} d={args.d} float64, {torch.get_num_threads()} torch threads, "
          f"{T} EM iterations from the same start, "
          f"MOEBENCH_COMPILE={os.environ.get('MOEBENCH_COMPILE', 'auto')}")

    rows = []
    run_joint_em(model, X, y, init, 2)  # warm-up (compiles the kernels, see MOEBENCH_COMPILE)
    sec, its, ll = run_joint_em(model, X, y, init, T)
    rows.append(("moebench joint-em", sec / its, ll, its))
    sec_c, its_c, ll_c = run_joint_em(model, X, y, init, 100_000, tol=1e-12)
    rows.append(("moebench joint-em (converged)", sec_c / its_c, ll_c, its_c))
    params, t0 = init, time.perf_counter()
    for _ in range(T):
        params, _ = model.em_step(X, y, params, JointEM.Params(gate_ridge=1e-12,
                                  gate_steps=50).gate_options())
    sec_f = time.perf_counter() - t0
    rows.append(("moebench fused em_step loop", sec_f / T,
                 -float(model.nll(params, X, y)) * X.shape[0], T))
    base = rows[0][1]
    skipped = []
    try:
        from moebench_peers.runners import (
            cgmm_available,
            cgmm_fit,
            flexmix_available,
            flexmix_fit,
        )
    except ImportError:
        skipped.append(("flexmix, cgmm", "moebench-peers is not installed "
                        "(pip install -e plugins/peers/moebench-peers)"))
    else:
        Xn, yn = data.X_train, data.y_train
        R0 = model.posterior(init, X, y).numpy()
        reason = flexmix_available()
        if reason is None:
            res = flexmix_fit(Xn, yn, R0, T)
            rows.append(("flexmix (R)", res.seconds_per_iteration, res.loglik, res.iterations))
        else:
            skipped.append(("flexmix", reason))
        reason = cgmm_available()
        if reason is None:
            res = cgmm_fit(Xn, yn, args.k, args.cgmm_iterations, seed=args.seed)
            rows.append(("cgmm (own init, affine)", res.seconds_per_iteration, res.loglik,
                         res.iterations))
        else:
            skipped.append(("cgmm", reason))

    print(f"{'implementation':32s} {'s/iteration':>12s} {'ratio':>9s} {'iters':>6s} "
          f"{'log-likelihood':>22s} {'rel. diff':>10s}")
    for name, spi, ll, its in rows:
        rel = abs(ll - rows[0][2]) / abs(rows[0][2]) if math.isfinite(ll) else math.nan
        print(f"{name:32s} {spi:12.5f} {spi / base:9.1f} {its:6d} {ll:22.10f} {rel:10.2e}")
    for name, reason in skipped:
        print(f"{name}: skipped ({reason})")
    np.set_printoptions(precision=4)


if __name__ == "__main__":
    main()
