"""Joint EM at suite sizes, idle and beside a competing CPU-bound process, per thread policy.

    python -m measurements.busy_machine [--n 4000 10000] [--d 8] [--k 4] [--threads 2]

For each OpenMP wait policy (the default spin-then-sleep, ``OMP_WAIT_POLICY=PASSIVE``, a short
``GOMP_SPINCOUNT``) and for one torch thread, it runs ``measurements.suite_sizes`` for joint EM in a
fresh process (the policy is read when the OpenMP runtime loads), idle and with one busy-loop
process competing, interleaved, ``--rounds`` times, and prints the median over rounds of the
median ms per iteration and the busy/idle ratio. On 2 cores a fair share is 2x; the target is
at most 2.5x. Single rounds on a small virtual machine vary by up to 2x (frequency, the host's
other tenants): take at least three.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

POLICIES = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin-10k": {"GOMP_SPINCOUNT": "10000"},
    "1 thread": {"__threads": "1"},
}


def run(n: int, d: int, k: int, threads: int, busy: int, env: dict[str, str]) -> float:
    env = dict(env)
    t = env.pop("__threads", str(threads))
    cmd = [sys.executable, "-m", "measurements.suite_sizes", "--algorithms", "joint-em",
           "--n", str(n), "--d", str(d), "--k", str(k), "--threads", t, "--busy", str(busy),
           "--repeat", "3"]
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                         check=True).stdout
    return float(re.search(r"([0-9.]+) ms/iter wall", out).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[4000, 10000])
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policies", nargs="+", default=list(POLICIES))
    ap.add_argument("--rounds", type=lambda v: max(1, int(v)), default=3,
                    help="interleaved rounds over every configuration (medians are reported)")
    args = ap.parse_args()
    print(f"joint EM, d={args.d}, k={args.k}, {args.threads} torch threads unless said, "
          f"{os.cpu_count()} cores, median of {args.rounds} interleaved rounds")
    configs = [(n, name) for n in args.n for name in args.policies]
    times: dict[tuple[int, str, int], list[float]] = {}
    for _ in range(args.rounds):
        for n, name in configs:
            for busy in (0, 1):
                times.setdefault((n, name, busy), []).append(
                    run(n, args.d, args.k, args.threads, busy, POLICIES[name]))
    print("| policy | n | idle (ms/iter) | 1 busy process (ms/iter) | ratio | idle, each round |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for n, name in configs:
        idle = statistics.median(times[n, name, 0])
        busy = statistics.median(times[n, name, 1])
        rounds = ", ".join(f"{t:.1f}" for t in times[n, name, 0])
        print(f"| {name} | {n} | {idle:.2f} | {busy:.2f} | {busy / idle:.2f} | {rounds} |")


if __name__ == "__main__":
    main()
