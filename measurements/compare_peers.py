"""moebench's joint EM next to flexmix (R) and cgmm on the same data and initialisation.

Usage::

    python -m measurements.compare_peers --n 100000 --k 4 --d 10 --iterations 20
    python -m measurements.compare_peers --n 100000 --reference --no-peers

Needs the optional package ``plugins/peers/moebench-peers`` (``pip install -e``) for the peers;
a peer whose software is missing is listed with the reason. Prints per-iteration times, their
ratios to moebench's, and the final log-likelihoods side by side. flexmix starts from the
posteriors of moebench's initialisation, so after the same number of iterations both must be at
the same point. moebench is also run until it stops by itself with its default settings, and
with the defaults before issue 12 (``tol = 1e-8``, ``gate_ridge = 1e-6`` throughout).

``--reference`` checks, without R, what the peers' maximum would be: the unpenalised maximum of
the log-likelihood (:func:`unpenalised_optimum`: Newton's method on the full log-likelihood,
in float64 through autograd, from joint EM's result until the Newton decrement reaches
rounding), and prints each row's relative gap to it.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from moebench import InitSpec, Iterate, ParamDict, Problem
from moebench.seeding import torch_generator
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.datasets.synthetic import SyntheticMoE
from moebench_plugins.models.regression import RegressionMoE

#: joint-em's defaults before issue 12: the NLL stopped ~1e-8 (relative) short of the maximum
#: likelihood on diffuse gates (``tol``) and up to 3e-5 on sharp ones (``gate_ridge`` only).
OLD_DEFAULTS = {"tol": 1e-8, "gate_ridge_final": None}


def run_joint_em(model: RegressionMoE, X: torch.Tensor, y: torch.Tensor, init: ParamDict,
                 iterations: int, **params) -> tuple[float, int, float, ParamDict]:
    """Joint EM with ``JointEM.Params(**params)`` (defaults otherwise) for at most
    ``iterations`` iterations.

    Returns
    -------
    tuple
        ``(seconds, iterations run, total log-likelihood, final parameters)``.
    """
    seen = []

    def callback(it: Iterate) -> bool:
        seen.append(it.objective)
        return it.iteration < iterations

    alg = JointEM(JointEM.Params(**params))
    t0 = time.perf_counter()
    final = alg.fit(Problem(model, X, y, torch_generator(0)), init, callback)
    seconds = time.perf_counter() - t0
    return seconds, len(seen) - 1, -seen[-1] * X.shape[0], final


def unpenalised_optimum(model: RegressionMoE, X: torch.Tensor, y: torch.Tensor,
                        start: ParamDict, *, max_steps: int = 50
                        ) -> tuple[float, ParamDict, dict[str, float]]:
    """The unpenalised maximum-likelihood estimate near ``start``, by Newton's method.

    Minimises ``model.nll`` (no ridge) over the free parameters (:meth:`RegressionMoE.free_params`)
    with the exact Hessian from autograd and a backtracking line search, until half the Newton
    decrement is below ``1e-15`` times the NLL (rounding) or the NLL stops decreasing. Meant for
    small parameter counts (the Hessian is dense) and a ``start`` in the optimum's basin, such
    as joint EM's result.

    Parameters
    ----------
    model, X, y
        The model and its training data (float64 recommended).
    start
        Starting parameters.
    max_steps
        Maximum Newton steps.

    Returns
    -------
    tuple
        ``(nll, params, info)``: the mean NLL at the optimum, its parameters, and ``steps``,
        ``grad_norm`` (of the mean NLL at the optimum) and ``decrement`` (half the last Newton
        decrement).
    """
    free = model.free_params(start)
    names = list(free)
    shapes = [free[name].shape for name in names]
    sizes = [free[name].numel() for name in names]

    def unflatten(v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: part.reshape(shape)
                for name, part, shape in zip(names, torch.split(v, sizes), shapes, strict=True)}

    def nll(v: torch.Tensor) -> torch.Tensor:
        return model.nll(model.from_free(unflatten(v), start), X, y)

    v = torch.cat([free[name].reshape(-1) for name in names])
    info = {"steps": 0.0, "grad_norm": math.nan, "decrement": math.nan}
    with torch.enable_grad():
        for step in range(max_steps + 1):
            w = v.clone().requires_grad_(True)
            value = nll(w)
            (grad,) = torch.autograd.grad(value, w)
            f = float(value.detach())
            info["grad_norm"] = float(grad.norm())
            if step == max_steps:
                break
            H = torch.autograd.functional.hessian(nll, v)
            evals, evecs = torch.linalg.eigh(H)
            # A Newton step where H is positive definite; else shift its spectrum.
            shift = max(0.0, -float(evals.min())) * 2 + 1e-12 * float(evals.abs().max())
            delta = evecs @ ((evecs.T @ grad) / (evals + shift))
            info["decrement"] = float(grad @ delta) / 2
            if not info["decrement"] > 1e-15 * abs(f):
                break
            t = 1.0
            with torch.no_grad():
                while t > 1e-10 and not float(nll(v - t * delta)) < f:
                    t /= 2
            if t <= 1e-10:
                break
            v = (v - t * delta).detach()
            info["steps"] = float(step + 1)
    with torch.no_grad():
        params = {k: t.detach() for k, t in model.from_free(unflatten(v), start).items()}
        return float(model.nll(params, X, y)), params, info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--sigma", type=float, default=0.5, help="noise of the generated data")
    ap.add_argument("--gate-norm", type=float, default=1.0,
                    help="norm of the generating gate vectors (larger: sharper gate)")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--cgmm-iterations", type=int, default=5,
                    help="iterations for cgmm (seconds each at n = 1e5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", action="store_true",
                    help="also compute the unpenalised maximum likelihood (Newton, autograd) and "
                    "print every row's relative gap to it")
    ap.add_argument("--no-peers", action="store_true", help="skip flexmix and cgmm")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    data = SyntheticMoE(SyntheticMoE.Params(
        n=args.n, n_test=10, d=args.d, k=args.k, sigma=args.sigma, gate_norm=args.gate_norm,
        gating="generic")).load(args.seed)
    model = RegressionMoE(RegressionMoE.Params(k=args.k, noise="per_expert", sigma=1.0),
                          n_features=args.d)
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    init = model.init_params(InitSpec(), torch_generator(args.seed))
    T = args.iterations
    print(f"n={args.n} k={args.k} d={args.d} sigma={args.sigma} gate_norm={args.gate_norm} "
          f"seed={args.seed} float64, {torch.get_num_threads()} torch threads, "
          f"{T} EM iterations from the same start, "
          f"MOEBENCH_COMPILE={os.environ.get('MOEBENCH_COMPILE', 'auto')}")

    rows = []
    run_joint_em(model, X, y, init, 2)  # warm-up (compiles the kernels, see MOEBENCH_COMPILE)
    # Exactly T iterations (tol = 0), as flexmix runs; otherwise joint-em's defaults.
    sec, its, ll, _ = run_joint_em(model, X, y, init, T, tol=0.0)
    rows.append((f"moebench joint-em ({T} its)", sec / its, ll, its))
    sec_c, its_c, ll_c, final = run_joint_em(model, X, y, init, 100_000)
    rows.append(("joint-em, defaults (own stop)", sec_c / its_c, ll_c, its_c))
    sec_o, its_o, ll_o, _ = run_joint_em(model, X, y, init, 100_000, **OLD_DEFAULTS)
    rows.append(("joint-em, old defaults", sec_o / its_o, ll_o, its_o))
    params, gate, t0 = init, JointEM.Params().gate_options(), time.perf_counter()
    for _ in range(T):
        params, _ = model.em_step(X, y, params, gate)
    sec_f = time.perf_counter() - t0
    rows.append(("moebench fused em_step loop", sec_f / T,
                 -float(model.nll(params, X, y)) * X.shape[0], T))
    reference = None
    if args.reference:
        t0 = time.perf_counter()
        nll_opt, _, info = unpenalised_optimum(model, X, y, final)
        reference = -nll_opt * X.shape[0]
        print(f"unpenalised optimum: log-likelihood {reference:.10f} after {info['steps']:.0f} "
              f"Newton steps from the defaults' result ({time.perf_counter() - t0:.1f} s; "
              f"|grad| of the mean NLL {info['grad_norm']:.1e}, last decrement/2 "
              f"{info['decrement']:.1e})")
    skipped = []
    if not args.no_peers:
        peers, skipped = run_peers(data, model.posterior(init, X, y).numpy(), args)
        rows += peers

    base, ll0 = rows[0][1], rows[0][2]
    gap_header = f" {'gap to opt.':>11s}" if reference is not None else ""
    print(f"{'implementation':32s} {'s/iteration':>12s} {'ratio':>9s} {'iters':>6s} "
          f"{'log-likelihood':>22s} {'rel. diff':>10s}{gap_header}")
    for name, spi, ll, its in rows:
        rel = abs(ll - ll0) / abs(ll0) if math.isfinite(ll) else math.nan
        gap = f" {(reference - ll) / abs(reference):11.2e}" if reference is not None else ""
        print(f"{name:32s} {spi:12.5f} {spi / base:9.1f} {its:6d} {ll:22.10f} {rel:10.2e}{gap}")
    for name, reason in skipped:
        print(f"{name}: skipped ({reason})")


def run_peers(data, R0: np.ndarray, args: argparse.Namespace
              ) -> tuple[list[tuple[str, float, float, int]], list[tuple[str, str]]]:
    """flexmix from the posteriors ``R0`` of moebench's start, and cgmm from its own start.

    Returns
    -------
    tuple
        Rows ``(name, seconds per iteration, log-likelihood, iterations)`` and, for each peer
        that could not run, ``(name, reason)``.
    """
    try:
        from moebench_peers.runners import (
            cgmm_available,
            cgmm_fit,
            flexmix_available,
            flexmix_fit,
        )
    except ImportError:
        return [], [("flexmix, cgmm", "moebench-peers is not installed "
                     "(pip install -e plugins/peers/moebench-peers)")]
    rows, skipped = [], []
    Xn, yn = data.X_train, data.y_train
    reason = flexmix_available()
    if reason is None:
        res = flexmix_fit(Xn, yn, R0, args.iterations)
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
    return rows, skipped

if __name__ == "__main__":
    main()
