"""Kernel times against the machine's DGEMM peak, measured in one run (docs/performance.md).

Usage::

    python -m measurements.measure_kernels [--n 1000000] [--k 4] [--d 10] [--repeat 7] \
        [--compile always|never|auto] [--device cpu|cuda] [--dtype float64|float32]

The bound of a kernel is its GEMM-shaped floating-point work (symmetric Grams counted once)
divided by the float64 GEMM rate measured in the same process on a square 2000 x 2000 product;
the ratio column is ``time / bound``. Times are medians over ``--repeat`` runs, after one untimed
call (which compiles the kernels when ``MOEBENCH_COMPILE`` asks for it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.common import over_chunks, regression_problem
from moebench.em import GateOptions
from moebench.seeding import torch_generator
from moebench_plugins.models.gate import fit_softmax_gate
from moebench_plugins.models.native import (
    Pairs,
    native_available,
    weighted_sums,
    weighted_sums_torch,
)
from moebench_plugins.models.spectral import (
    cqt_coefficients,
    orth_als,
    tensor_power_method,
    whitened_moments,
)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(f: Callable[[], object], repeat: int, device: str = "cpu") -> float:
    f()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def gemm_peak(repeat: int, device: str = "cpu", dtype: torch.dtype = torch.float64) -> float:
    """GEMM rate in FLOP/s on ``device`` in ``dtype`` (best of ``repeat``)."""
    size = 2000 if device == "cpu" else 8192
    a = torch.randn(size, size, dtype=dtype, device=device)
    a @ a
    _sync(device)
    best = min(_timed(lambda: a @ a, device) for _ in range(repeat))
    return 2 * size**3 / best


def _timed(f: Callable[[], object], device: str = "cpu") -> float:
    t0 = time.perf_counter()
    f()
    _sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    with torch.no_grad():  # not set_grad_enabled: a caller (the tests) keeps its autograd
        _main(argv)


def _main(argv: list[str] | None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--compile", choices=["auto", "always", "never"], default=None,
                    help="MOEBENCH_COMPILE for this run (default: the environment's, else auto)")
    args = ap.parse_args(argv)
    if args.compile:
        os.environ["MOEBENCH_COMPILE"] = args.compile
    n, k, d, rep = args.n, args.k, args.d, args.repeat
    dev, dt = args.device, getattr(torch, args.dtype)
    model, X, y, _, init = regression_problem(n, k, d, device=dev, dtype=dt)
    R = model.posterior(init, X, y)
    coeffs = cqt_coefficients("linear", 0.5)
    T3 = whitened_moments(X, y, k, coeffs).T3
    peak = gemm_peak(rep, dev, dt)
    sym = d * (d + 1)  # flops of one symmetric weighted Gram per sample (d(d+1)/2 FMAs)
    pairs = (k - 1) * k // 2
    flops = {
        "E-step (posterior)": 2 * n * d * 2 * k,
        "expert M-step": n * k * (d + 1) * (d + 2),
        "gate Newton step (system + trial)": n * pairs * sym + 2 * n * 2 * k * d,
        "fused EM iteration (1 pass + 1 Newton)": 2 * n * d * 2 * k + n * k * (d + 1) * (d + 2)
        + n * pairs * sym + 2 * n * k * d,
        "whitened third moment": 2 * n * (d * (d + 1) // 2 + d * k + k**3),
        "tensor power method": 0,
        "Orth-ALS": 0,
    }
    D = d + 2  # [f; 1; y]
    m = k + pairs
    Zt = torch.cat([X.T, torch.ones(1, n, dtype=X.dtype, device=dev), y[None]]).contiguous()
    Wt = torch.rand(m, n, dtype=X.dtype, generator=torch_generator(1)).to(dev)
    gram_pairs = Pairs.packed(D, ones=True)
    flops["weighted Grams, native kernel"] = 2 * n * m * len(gram_pairs)
    flops["weighted Grams, torch expression"] = 2 * n * m * len(gram_pairs)
    kernels = {
        "E-step (posterior)": lambda: model.posterior(init, X, y),
        "expert M-step": lambda: model.m_step_experts(X, y, R, init),
        "gate Newton step (system + trial)":
            lambda: fit_softmax_gate(X, R, init["W"], max_steps=1),
        "fused EM iteration (1 pass + 1 Newton)":
            lambda: model.em_step(X, y, init, GateOptions(max_steps=1)),
        "whitened third moment": lambda: whitened_moments(X, y, k, coeffs),
        "tensor power method": lambda: tensor_power_method(T3, k, 10, 100, torch_generator(0, dev)),
        "Orth-ALS": lambda: orth_als(T3, k, 100, torch_generator(0, dev)),
        "weighted Grams, native kernel":
            lambda: over_chunks(lambda Z, W: weighted_sums(Z, [(W, gram_pairs)]), Zt, Wt),
        "weighted Grams, torch expression":
            lambda: over_chunks(lambda Z, W: weighted_sums_torch(W, Z, gram_pairs), Zt, Wt),
    }
    print(f"n={n} k={k} d={d} {args.dtype} on {dev}, {torch.get_num_threads()} torch threads, "
          f"measured GEMM peak {peak / 1e9:.1f} GFLOP/s, "
          f"MOEBENCH_COMPILE={os.environ.get('MOEBENCH_COMPILE', 'auto')}, native kernel "
          f"{'on' if native_available() else 'off'} (first calls, compilation included, are "
          "not timed)")
    print("| kernel | size | time (ms) | bound (ms) | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, f in kernels.items():
        ms = median_ms(f, rep, dev)
        bound = 1e3 * flops[name] / peak
        ratio = f"{ms / bound:.1f}" if bound > 0 else "-"
        bound_s = f"{bound:.1f}" if bound > 0 else "-"
        size = f"n={n:.0e}, k={k}, d={d}" if flops[name] else f"k={k} ({k}x{k}x{k} tensor)"
        if name.startswith("weighted Grams"):
            size = f"n={n:.0e}, {m} x {len(gram_pairs)} sums"
        print(f"| {name} | {size} | {ms:.1f} | {bound_s} | {ratio} |")


if __name__ == "__main__":
    main()
