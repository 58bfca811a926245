"""Per-iteration cost of the algorithms at the paper suite's sizes, idle and on a busy machine.

The kernel table (``measure_kernels``) times n = 10^6; suites run n = 2,000-20,000, where a step
costs little arithmetic and the time goes to Python and per-call dispatch, and where another
CPU-bound process (a laptop's browser, a shared node, ``--jobs 2``) can make OpenMP threads that
spin-wait many times slower. This script runs each algorithm's own ``fit`` loop for a fixed
number of iterations through the callback (as the runner does, without metrics) and reports the
median wall and CPU time per iteration, optionally while a competing busy-loop process runs:

    python -m measurements.suite_sizes                       # idle
    python -m measurements.suite_sizes --busy 1              # one competing CPU-bound process
    python -m measurements.suite_sizes --threads 1 --n 4000 --d 8

Ratios are only meaningful within one run of this script (or runs interleaved in time):
absolute times on a shared machine move with its load. It uses only moebench's public plugin API,
so the same file times an older checkout (run it with that checkout's interpreter).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import torch

from moebench import plugins
from moebench.algorithm import Iterate, Problem
from moebench.cell.unit import build_model
from moebench.model import InitSpec
from moebench.seeding import torch_generator

ALGORITHMS = {
    "joint-em": {},
    "mirror-em": {"eta": 0.5},
    "gradient-em": {},
    "gd": {"lr": 0.02},
}


def _spin(stop: multiprocessing.Event) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def time_algorithm(name: str, params: dict, n: int, d: int, k: int, iterations: int,
                   repeat: int) -> tuple[float, float]:
    """Median (wall, cpu) seconds per iteration of ``name`` over ``repeat`` fits."""
    ds = plugins.get("datasets", "synthetic-moe")
    data = ds(ds.Params(n=n, n_test=100, d=d, k=k, sigma=0.2, gating="generic")).load(1)
    device = plugins.get("devices", "cpu")()
    model = build_model(data, None, device, torch.float64)
    X = device.tensor(data.X_train, torch.float64)
    y = device.tensor(data.y_train, torch.float64)
    init = model.init_params(InitSpec(), torch_generator(3))
    cls = plugins.get("algorithms", name)
    walls, cpus = [], []
    for r in range(repeat + 1):
        marks: list[tuple[float, float]] = []

        def callback(it: Iterate, marks: list = marks) -> bool:
            marks.append((time.perf_counter(), time.thread_time()))
            return it.iteration < iterations

        algorithm = cls(cls.Params.model_validate(params))
        problem = Problem(model, X, y, torch_generator(r))
        algorithm.fit(problem, {k_: v.clone() for k_, v in init.items()}, callback)
        if r == 0 or len(marks) < 3:  # warm-up fit
            continue
        walls += [b[0] - a[0] for a, b in zip(marks[1:], marks[2:], strict=False)]
        cpus += [b[1] - a[1] for a, b in zip(marks[1:], marks[2:], strict=False)]
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000])
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--busy", type=int, default=0,
                        help="competing CPU-bound processes during the measurement")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
            for _ in range(args.busy)]
    for h in hogs:
        h.start()
    try:
        print(f"threads={torch.get_num_threads()} busy={args.busy} d={args.d} k={args.k}")
        for n in args.n:
            for name in args.algorithms:
                wall, cpu = time_algorithm(name, ALGORITHMS.get(name, {}), n, args.d, args.k,
                                           args.iterations, args.repeat)
                print(f"{name:12s} n={n:>7d}  {wall * 1e3:8.2f} ms/iter wall  "
                      f"{cpu * 1e3:8.2f} ms/iter cpu")
    finally:
        stop.set()
        for h in hogs:
            h.join()


if __name__ == "__main__":
    main()
