"""Where does ``torch.compile`` pay? Compile time against the time it saves per EM iteration.

    python -m measurements.compile_pays [--n 100000 1000000] [--iterations 8] [--budget 100]

For each ``n`` it runs joint EM (k = 4, d = 10, float64) in fresh processes, as a worker would:
once with ``MOEBENCH_COMPILE=never`` and twice with ``always`` (the first may find torch's
on-disk cache cold; the second finds it warm, as every later run and worker does, the cache
being the one workers use, ``<moebench cache>/torchinductor``). Each process reports the seconds
spent compiling and the median wall and CPU time of an iteration after the first. Compiling pays
within a budget of ``B`` iterations when ``compile time < B x (eager - compiled)`` per
iteration; the script prints that break-even for each ``n`` and, from a straight line
``saving(n) = a + b n`` through the measured points (least squares), the smallest ``n`` at which a
warm compile pays within ``--budget`` iterations: the figure behind ``COMPILE_MIN_ROWS`` in
``plugins/models/kernels/compiling.py``.
Times depend on the machine and its load; the break-even is a ratio of figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = "--child"


def child(n: int, iterations: int) -> None:
    """In a fresh process: fit joint EM for ``iterations`` and print a JSON line of timings."""
    from moebench.execution.limits import use_persistent_compile_cache

    use_persistent_compile_cache()
    import torch

    from moebench import plugins
    from moebench.algorithm import Iterate, Problem
    from moebench.cell.unit import build_model
    from moebench.clock import compile_seconds
    from moebench.model import InitSpec
    from moebench.seeding import torch_generator

    ds = plugins.get("datasets", "synthetic-moe")
    data = ds(ds.Params(n=n, n_test=100, d=10, k=4, sigma=0.2, gating="generic")).load(1)
    device = plugins.get("devices", "cpu")()
    model = build_model(data, None, device, torch.float64)
    X = device.tensor(data.X_train, torch.float64)
    y = device.tensor(data.y_train, torch.float64)
    init = model.init_params(InitSpec(), torch_generator(3))
    marks: list[tuple[float, float, float]] = []

    def callback(it: Iterate) -> bool:
        marks.append((time.perf_counter(), time.thread_time(), compile_seconds()))
        return it.iteration < iterations

    cls = plugins.get("algorithms", "joint-em")
    start = time.perf_counter()
    cls(cls.Params(tol=0.0)).fit(Problem(model, X, y, torch_generator(0)), init, callback)
    # recompilations (a new chunk shape) are compile time, not iteration time
    walls = [b[0] - a[0] - (b[2] - a[2]) for a, b in zip(marks[1:], marks[2:], strict=False)]
    cpus = [b[1] - a[1] - (b[2] - a[2]) for a, b in zip(marks[1:], marks[2:], strict=False)]
    print(json.dumps({"compile": compile_seconds(), "total": time.perf_counter() - start,
                      "wall": statistics.median(walls), "cpu": statistics.median(cpus)}))


def run(n: int, iterations: int, mode: str) -> dict[str, float]:
    env = {**os.environ, "MOEBENCH_COMPILE": mode}
    out = subprocess.run([sys.executable, "-m", "measurements.compile_pays", CHILD, str(n),
                          str(iterations)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == CHILD:
        child(int(sys.argv[2]), int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--budget", type=int, default=100,
                    help="iterations a cell typically runs (the paper suite's max_iter)")
    args = ap.parse_args()
    print("joint EM, k=4, d=10, float64; fresh process per row; times per iteration after the "
          "first")
    print("| n | eager (ms) | compiled (ms) | saving (ms) | compile, 1st run (s) | "
          "compile, warm cache (s) | break-even (iterations, warm) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    per_row: list[tuple[int, float, float]] = []
    for n in args.n:
        eager = run(n, args.iterations, "never")
        first = run(n, args.iterations, "always")
        warm = run(n, args.iterations, "always")
        saving = eager["wall"] - warm["wall"]
        even = warm["compile"] / saving if saving > 0 else float("inf")
        per_row.append((n, saving, warm["compile"]))
        print(f"| {n} | {eager['wall'] * 1e3:.1f} | {warm['wall'] * 1e3:.1f} | "
              f"{saving * 1e3:.1f} | {first['compile']:.1f} | {warm['compile']:.1f} | "
              f"{even:.0f} |", flush=True)
    paying = [(n, s, c) for n, s, c in per_row if s > 0]
    if len(paying) >= 2:
        ns = [float(n) for n, _, _ in paying]
        savings = [s for _, s, _ in paying]
        n_mean, s_mean = statistics.fmean(ns), statistics.fmean(savings)
        slope = (sum((n - n_mean) * (s - s_mean) for n, s in zip(ns, savings, strict=True))
                 / sum((n - n_mean) ** 2 for n in ns))
        intercept = s_mean - slope * n_mean
        cost = statistics.median(c for _, _, c in paying)
        needed = cost / args.budget  # saving per iteration that repays the compile in budget
        where = (needed - intercept) / slope if slope > 0 else float("inf")
        print(f"saving ~ {intercept * 1e3:.1f} ms + {slope * 1e9:.0f} ns x n per iteration; a "
              f"warm compile (~{cost:.1f} s) pays within {args.budget} iterations from "
              f"n ~ {max(where, 0):,.0f} rows")
    elif paying:
        print("one paying size only: measure at least two n for a threshold")
    else:
        print("compiling saved nothing at these sizes: it does not pay here")


if __name__ == "__main__":
    main()
