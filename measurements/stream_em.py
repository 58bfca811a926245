"""EM on data that does not fit in memory: n rows streamed from a memory-mapped NPZ file.

Usage::

    python -m measurements.stream_em --n 100000000 --path /tmp/moe-1e8.npz --iterations 2

Writes ``X`` (n x d) and ``y`` (n,) of a linear-expert MoE (k experts, softmax gate,
sigma = 0.5) into an uncompressed NPZ block by block (never the whole array in memory), unless
``--path`` already holds one of the right size, then runs fused EM iterations
(``RegressionMoE.em_step(..., keep_responsibilities=False)``) on :func:`open_npz_memmap` views of
it and prints the seconds per iteration, the NLL and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import zipfile

import numpy as np
import torch
from numpy.lib import format as npy_format

from moebench import InitSpec
from moebench.em import GateOptions
from moebench.seeding import torch_generator
from moebench_plugins.datasets.arrays import open_npz_memmap
from moebench_plugins.models.regression import RegressionMoE

_BLOCK = 1_000_000


def write_npz(path: str, n: int, k: int, d: int, seed: int) -> None:
    """Sample the MoE block by block straight into an uncompressed NPZ."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((k, d))
    W = np.vstack([rng.standard_normal((k - 1, d)), np.zeros((1, d))])
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, shape in (("X", (n, d)), ("y", (n,))):
            block_rng = np.random.default_rng(seed + 1)  # X is re-drawn identically for y
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                npy_format.write_array_header_2_0(
                    fh, {"descr": "<f8", "fortran_order": False, "shape": shape})
                for s in range(0, n, _BLOCK):
                    m = min(_BLOCK, n - s)
                    X = block_rng.standard_normal((m, d))
                    if name == "X":
                        fh.write(X.tobytes())
                        continue
                    logits = X @ W.T
                    p = np.exp(logits - logits.max(axis=1, keepdims=True))
                    p /= p.sum(axis=1, keepdims=True)
                    z = (p.cumsum(axis=1) > rng.random((m, 1))).argmax(axis=1)
                    y = (X * A[z]).sum(axis=1) + 0.5 * rng.standard_normal(m)
                    fh.write(y.tobytes())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--path", default="moe-stream.npz")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    arrays = open_npz_memmap(args.path) if os.path.exists(args.path) else {}
    if arrays.get("X") is None or arrays["X"].shape != (args.n, args.d):
        t0 = time.perf_counter()
        write_npz(args.path, args.n, args.k, args.d, args.seed)
        print(f"wrote {args.path} ({os.path.getsize(args.path) / 1e9:.1f} GB) in "
              f"{time.perf_counter() - t0:.0f} s")
        arrays = open_npz_memmap(args.path)
    X, y = arrays["X"], arrays["y"]
    model = RegressionMoE(RegressionMoE.Params(k=args.k, noise="per_expert", sigma=1.0),
                          n_features=args.d)
    params = model.init_params(InitSpec(), torch_generator(args.seed))
    print(f"n={args.n:,} k={args.k} d={args.d} float64, {torch.get_num_threads()} threads, "
          f"MOEBENCH_COMPILE={os.environ.get('MOEBENCH_COMPILE', 'auto')}")
    for it in range(args.iterations):
        t0 = time.perf_counter()
        params, info = model.em_step(X, y, params, GateOptions(max_steps=1),
                                     keep_responsibilities=False)
        sec = time.perf_counter() - t0
        print(f"iteration {it + 1}: {sec:.1f} s, NLL at the start {info['nll']:.6f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak RSS {peak:.2f} GB (file {os.path.getsize(args.path) / 1e9:.1f} GB; mapped file "
          f"pages count as resident, the kernel drops them under memory pressure)")
    status = proc_status()
    if status:
        print("now: " + ", ".join(f"{key} {status[key] / 1e9:.2f} GB" for key in
                                  ("RssAnon", "RssFile") if key in status))


def proc_status(keys: tuple[str, ...] = ("RssAnon", "RssFile")) -> dict[str, float]:
    """Memory figures ``keys`` (``VmHWM``, ``RssAnon``, ...) from ``/proc/self/status``, in
    bytes (empty off Linux)."""
    try:
        with open("/proc/self/status") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in keys and value.strip().endswith("kB"):
            out[key] = 1e3 * float(value.split()[0])
    return out


if __name__ == "__main__":
    main()
