"""Equality of two runs of the same suite on different devices, to a stated tolerance.

    python -m measurements.compare_devices RESULTS_CPU RESULTS_CUDA \
        [--rtol 1e-4] [--final-rtol 1e-2]

Both folders come from ``moebench run`` of the same suite (e.g. ``--device cpu`` and
``--device cuda``). Cells are matched by (experiment, dataset, algorithm, repetition). Two
tolerances, because the devices compute in different dtypes by default (float64 on the CPU,
float32 on CUDA) and an optimiser's path amplifies rounding over its iterations:

- iteration 0 (same data, same initial point): every metric within ``--rtol``;
- final values of successful cells in both runs: every metric within ``--final-rtol``
  (relative to ``max(1, |cpu value|)``), and the same status.

Prints the worst deviations and exits 1 when a tolerance is exceeded.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from moebench.reports.results import SUCCESS, read_results

KEYS = ["experiment", "dataset", "algorithm", "repetition"]
#: Columns that are not metrics.
NOT_METRICS = {"iteration", "time", "cpu_time", "repetition", "seed", "data_seed", "init_seed",
               "objective", "time_metrics", "time_compile", "time_data", "time_worker_start",
               "exitcode"}


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in NOT_METRICS and not c.startswith("extra.")
            and pd.api.types.is_float_dtype(frame[c])]


def compare(a: pd.DataFrame, b: pd.DataFrame, rtol: float, final_rtol: float) -> list[str]:
    """Problems found (empty when the runs agree within the tolerances)."""
    problems: list[str] = []
    metrics = sorted(set(metric_columns(a)) & set(metric_columns(b)))
    first = [f[(f["record"] == "iteration") & (f["iteration"] == 0)].set_index(KEYS)
             for f in (a, b)]
    joined = first[0][metrics].merge(first[1][metrics], left_index=True, right_index=True,
                                     suffixes=("", "_b"))
    for m in metrics:
        x, y = joined[m].to_numpy(float), joined[f"{m}_b"].to_numpy(float)
        ok = np.isclose(x, y, rtol=rtol, atol=0, equal_nan=True)
        if not ok.all():
            worst = np.nanmax(np.abs(x - y) / np.maximum(np.abs(x), 1e-300))
            problems.append(f"iteration 0: {m} differs in {int((~ok).sum())} cells "
                            f"(worst relative {worst:.2e} > {rtol})")
    fins = [f[f["record"] == "final"].set_index(KEYS) for f in (a, b)]
    both = fins[0].merge(fins[1], left_index=True, right_index=True, suffixes=("", "_b"))
    status_diff = both[both["status"] != both["status_b"]]
    for key, row in status_diff.iterrows():
        problems.append(f"{'/'.join(map(str, key))}: status {row['status']} vs {row['status_b']}")
    good = both[both["status"].isin(SUCCESS) & both["status_b"].isin(SUCCESS)]
    for m in metrics:
        x, y = good[m].to_numpy(float), good[f"{m}_b"].to_numpy(float)
        dev = np.abs(x - y) / np.maximum(1.0, np.abs(x))
        bad = dev > final_rtol
        if bad.any():
            problems.append(f"final: {m} differs in {int(bad.sum())} cells "
                            f"(worst {np.nanmax(dev):.2e} > {final_rtol})")
    if joined.empty:
        problems.append("no cells in common")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--final-rtol", type=float, default=1e-2)
    args = ap.parse_args(argv)
    problems = compare(read_results(args.a), read_results(args.b), args.rtol, args.final_rtol)
    for p in problems:
        print(p)
    print("agree within tolerances" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
